//! `payments.v1.PaymentService`: any request bytes, any method (see `fuzz/src/lib.rs`).
#![no_main]

use std::sync::LazyLock;

use fuzz::GrpcTarget;

static TARGET: LazyLock<GrpcTarget> = LazyLock::new(|| {
    GrpcTarget::new("payments.v1.PaymentService", async |env| {
        let config = payments::Config::from_env(&env).expect("valid config");
        payments::build(config).await.expect("payments binds")
    })
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| TARGET.call(data));
