//! `orders.v1.OrderService`: any request bytes, any method (see `fuzz/src/lib.rs`).
//! Orders calls real inventory and payments servers, served on loopback in the same
//! process, so that a valid order runs the whole saga.
#![no_main]

use std::sync::LazyLock;

use fuzz::GrpcTarget;
use shared::events::InProcessBus;
use shared::testing::TestServer;

static TARGET: LazyLock<GrpcTarget> = LazyLock::new(|| {
    GrpcTarget::new("orders.v1.OrderService", async |env| {
        let inventory = inventory::Config::from_env(&env).expect("valid config");
        let inventory = TestServer::start(inventory::build(inventory).await.expect("binds"));
        let payments = payments::Config::from_env(&env).expect("valid config");
        let payments = TestServer::start(payments::build(payments).await.expect("binds"));
        let env = env
            .with("INVENTORY_ADDR", format!("http://{}", inventory.addr))
            .with("PAYMENTS_ADDR", format!("http://{}", payments.addr));
        let config = orders::Config::from_env(&env).expect("valid config");
        // The servers keep serving in their tasks after their handles are dropped.
        orders::build(config, &InProcessBus::new())
            .await
            .expect("orders binds")
    })
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| TARGET.call(data));
