//! `notifications.v1.NotificationService`: any request bytes, any method (see
//! `fuzz/src/lib.rs`).
#![no_main]

use std::sync::LazyLock;

use fuzz::GrpcTarget;
use shared::events::InProcessBus;

static TARGET: LazyLock<GrpcTarget> = LazyLock::new(|| {
    GrpcTarget::new("notifications.v1.NotificationService", async |env| {
        let config = notifications::Config::from_env(&env).expect("valid config");
        let bus = InProcessBus::new();
        notifications::build(config, &bus)
            .await
            .expect("notifications binds")
    })
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| TARGET.call(data));
