//! Where items live. [`Store`] is what a database must provide; [`MemoryStore`] is the
//! embedded default.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;

use crate::domain::Item;
use crate::error::Error;

#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// One item; [`Error::ItemNotFound`] if unknown.
    async fn item(&self, id: &str) -> Result<Item, Error>;
}

#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    items: Mutex<HashMap<String, Item>>,
}

impl MemoryStore {
    /// A store holding one example item, `item-1`, so the service answers out of the box.
    pub(crate) fn with_examples() -> Self {
        let store = Self::default();
        store.items.lock().expect("a new lock").insert(
            "item-1".into(),
            Item {
                id: "item-1".into(),
                display_name: "An example item".into(),
                create_time: SystemTime::now(),
            },
        );
        store
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<String, Item>>, Error> {
        Ok(shared::storage::lock(&self.items)?)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn item(&self, id: &str) -> Result<Item, Error> {
        self.lock()?
            .get(id)
            .cloned()
            .ok_or_else(|| Error::ItemNotFound { id: id.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_example_item_is_there_and_others_are_not() {
        let store = MemoryStore::with_examples();
        assert_eq!(store.item("item-1").await.unwrap().id, "item-1");
        assert!(matches!(
            store.item("item-2").await,
            Err(Error::ItemNotFound { .. })
        ));
    }
}
