//! `inventory.v1.InventoryService`: any request bytes, any method (see `fuzz/src/lib.rs`).
#![no_main]

use std::sync::LazyLock;

use fuzz::GrpcTarget;

static TARGET: LazyLock<GrpcTarget> = LazyLock::new(|| {
    GrpcTarget::new("inventory.v1.InventoryService", async |env| {
        let config = inventory::Config::from_env(&env).expect("valid config");
        inventory::build(config).await.expect("inventory binds")
    })
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| TARGET.call(data));
