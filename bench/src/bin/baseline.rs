//! `baseline [ADDR]`: serves the bare GetProduct of `bench::baseline` on ADDR
//! (default `127.0.0.1:50060`) until killed.

use std::net::SocketAddr;

use bench::baseline::{BaselineInventory, InventoryServiceServer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shared::runtime::block_on(async {
        let addr: SocketAddr = std::env::args()
            .nth(1)
            .as_deref()
            .unwrap_or("127.0.0.1:50060")
            .parse()?;
        tonic::transport::Server::builder()
            .add_service(InventoryServiceServer::new(BaselineInventory))
            .serve(addr)
            .await?;
        Ok(())
    })
}
