//! The `{{name}}.v1.{{Name}}Service` handlers: proto in, domain call, proto out.

use std::sync::Arc;

use contracts::{{name}}::v1::{{name}}_service_server::{{{Name}}Service, {{Name}}ServiceServer};
use contracts::{{name}}::v1::{self as pb};
use shared::ServerConfig;
use tonic::{Request, Response, Status};

use crate::domain::{self, Item};
use crate::store::Store;

/// The tonic service over `store`, with the server's message size limits.
pub(crate) fn service(
    store: Arc<dyn Store>,
    config: &ServerConfig,
) -> {{Name}}ServiceServer<{{Name}}Api> {
    {{Name}}ServiceServer::new({{Name}}Api { store })
        .max_decoding_message_size(config.max_message_size)
        .max_encoding_message_size(config.max_message_size)
}

pub(crate) struct {{Name}}Api {
    store: Arc<dyn Store>,
}

#[tonic::async_trait]
impl {{Name}}Service for {{Name}}Api {
    #[tracing::instrument(skip_all, fields(item_id = %request.get_ref().item_id))]
    async fn get_item(
        &self,
        request: Request<pb::GetItemRequest>,
    ) -> Result<Response<pb::GetItemResponse>, Status> {
        let id = request.into_inner().item_id;
        domain::validate_item_id(&id)?;
        let item = self.store.item(&id).await?;
        Ok(Response::new(pb::GetItemResponse {
            item: Some(item.into()),
        }))
    }
}

impl From<Item> for pb::Item {
    fn from(item: Item) -> Self {
        Self {
            item_id: item.id,
            display_name: item.display_name,
            create_time: Some(item.create_time.into()),
        }
    }
}
