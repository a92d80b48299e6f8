//! The `inventory.v1.InventoryService` handlers: proto in, domain call, proto out.

use std::sync::Arc;

use contracts::common::v1 as common;
use contracts::inventory::v1::inventory_service_server::{
    InventoryService, InventoryServiceServer,
};
use contracts::inventory::v1::{self as pb};
use shared::{PageRequest, ServerConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::domain::{self, Item, NewReservation, Product, Reservation, ReservationState};
use crate::store::Store;

/// The tonic service over `store`, with the server's message size limits.
pub(crate) fn service(
    store: Arc<dyn Store>,
    config: &ServerConfig,
) -> InventoryServiceServer<InventoryApi> {
    InventoryServiceServer::new(InventoryApi { store })
        .max_decoding_message_size(config.max_message_size)
        .max_encoding_message_size(config.max_message_size)
}

pub(crate) struct InventoryApi {
    store: Arc<dyn Store>,
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    #[tracing::instrument(skip_all, fields(sku = %request.get_ref().sku))]
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let sku = request.into_inner().sku;
        domain::validate_sku(&sku)?;
        let product = self.store.product(&sku).await?;
        Ok(Response::new(pb::GetProductResponse {
            product: Some(product.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_products(
        &self,
        request: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let request = request.into_inner();
        let page = PageRequest::new(request.page_size, &request.page_token)?;
        let products = self.store.products(&page).await?;
        let (products, next_page_token) = page.finish(products, |p| &p.sku);
        Ok(Response::new(pb::ListProductsResponse {
            products: products.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(reservation_id = %request.get_ref().reservation_id))]
    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        let request = request.into_inner();
        let items = request.items.into_iter().map(item).collect();
        let reservation = NewReservation::new(request.reservation_id, items)
            .map_err(crate::error::Error::from)?;
        let reservation = self.store.reserve(reservation).await?;
        Ok(Response::new(pb::ReserveStockResponse {
            reservation: Some(reservation.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(reservation_id = %request.get_ref().reservation_id))]
    async fn commit_reservation(
        &self,
        request: Request<pb::CommitReservationRequest>,
    ) -> Result<Response<pb::CommitReservationResponse>, Status> {
        let id = request.into_inner().reservation_id;
        domain::validate_reservation_id(&id)?;
        let reservation = self.store.commit(&id).await?;
        Ok(Response::new(pb::CommitReservationResponse {
            reservation: Some(reservation.into()),
        }))
    }

    #[tracing::instrument(skip_all, fields(reservation_id = %request.get_ref().reservation_id))]
    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        let id = request.into_inner().reservation_id;
        domain::validate_reservation_id(&id)?;
        let reservation = self.store.release(&id).await?;
        Ok(Response::new(pb::ReleaseReservationResponse {
            reservation: Some(reservation.into()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn restock_products(
        &self,
        request: Request<Streaming<pb::RestockProductsRequest>>,
    ) -> Result<Response<pb::RestockProductsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut items = Vec::new();
        while let Some(message) = stream.message().await? {
            let item = Item {
                sku: message.sku,
                quantity: message.quantity,
            };
            domain::validate_restock_item(items.len(), &item)?;
            items.push(item);
        }
        if items.is_empty() {
            let mut violations = shared::Violations::new();
            violations.add("stream", "must have at least one message");
            violations.finish()?;
        }
        let products = self.store.restock(&items).await?;
        Ok(Response::new(pb::RestockProductsResponse {
            item_count: i32::try_from(items.len()).unwrap_or(i32::MAX),
            units_added: items.iter().map(|i| domain::units(i.quantity)).sum(),
            products: products.into_iter().map(Into::into).collect(),
        }))
    }
}

fn item(item: pb::ReservationItem) -> Item {
    Item {
        sku: item.sku,
        quantity: item.quantity,
    }
}

impl From<Product> for pb::Product {
    fn from(p: Product) -> Self {
        Self {
            sku: p.sku,
            name: p.name,
            description: p.description,
            price: Some(common::Money {
                currency_code: p.price.currency,
                amount_minor: p.price.minor,
            }),
            available: p.stock.available,
            reserved: p.stock.reserved,
            sold: p.stock.sold,
            update_time: Some(p.update_time.into()),
        }
    }
}

impl From<Reservation> for pb::Reservation {
    fn from(r: Reservation) -> Self {
        let state = match r.state {
            ReservationState::Reserved => pb::ReservationState::Reserved,
            ReservationState::Committed => pb::ReservationState::Committed,
            ReservationState::Released => pb::ReservationState::Released,
        };
        Self {
            reservation_id: r.id,
            items: r
                .items
                .into_iter()
                .map(|i| pb::ReservationItem {
                    sku: i.sku,
                    quantity: i.quantity,
                })
                .collect(),
            state: state.into(),
            create_time: Some(r.create_time.into()),
            update_time: Some(r.update_time.into()),
        }
    }
}
