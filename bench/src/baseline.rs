//! The ceiling: `inventory.v1.InventoryService/GetProduct` on bare tonic (the same
//! version as the services), with no layer at all: no tracing, metrics, deadlines,
//! health or reflection. It answers the product the real inventory answers for
//! [`SKU`], so both responses have the same size (the driver checks it).

use std::time::SystemTime;

use contracts::common::v1::Money;
use contracts::inventory::v1 as pb;
use pb::inventory_service_server::InventoryService;
use tonic::{Request, Response, Status, Streaming};

pub use pb::inventory_service_server::InventoryServiceServer;

/// The product every GetProduct scenario asks for (500 units in the demo catalog).
pub const SKU: &str = "SKU-005";

/// The demo catalog's entry for [`SKU`], as inventory answers it before any order.
pub fn product() -> pb::Product {
    pb::Product {
        sku: SKU.into(),
        name: "Paper filters".into(),
        description: "Pack of 100.".into(),
        price: Some(Money {
            currency_code: "USD".into(),
            amount_minor: 699,
        }),
        available: 500,
        reserved: 0,
        sold: 0,
        update_time: Some(SystemTime::now().into()),
    }
}

/// GetProduct only; every other method is UNIMPLEMENTED.
#[derive(Clone, Copy, Debug, Default)]
pub struct BaselineInventory;

#[tonic::async_trait]
impl InventoryService for BaselineInventory {
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        if request.get_ref().sku != SKU {
            return Err(Status::not_found("the baseline knows one product"));
        }
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product()),
        }))
    }

    async fn list_products(
        &self,
        _: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn reserve_stock(
        &self,
        _: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn commit_reservation(
        &self,
        _: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn release_reservation(
        &self,
        _: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn restock_products(
        &self,
        _: Request<Streaming<pb::RestockProductsRequest>>,
    ) -> Result<Response<pb::RestockProductsResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
}
