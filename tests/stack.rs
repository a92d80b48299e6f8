//! The stack launcher wires every service to the others.

use stack::{Ports, Stack};

#[tokio::test]
async fn the_stack_binds_every_service_on_free_ports() {
    let stack = Stack::bind(&shared::Env::default(), &Ports::Ephemeral).await.unwrap();
    for name in ["inventory", "payments"] {
        let addr = stack.addr(name).unwrap_or_else(|| panic!("{name} is part of the stack"));
        assert_ne!(addr.port(), 0);
    }
}
