//! This process's watchers of orders, fed after each commit of this process and, for
//! changes committed by other replicas, through `LISTEN/NOTIFY` on [`CHANGES`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::rows::one;
use crate::domain::Order;
use crate::error::Error;

/// The `LISTEN/NOTIFY` channel of order changes; the payload is the order id.
pub(super) const CHANGES: &str = "orders_changed";

/// The watch channel of each order someone in this process watches.
pub(super) type Watched = Arc<Mutex<HashMap<String, watch::Sender<Order>>>>;

/// Tells this process's watchers of `order` its new state.
pub(super) fn tell_watchers(
    watched: &Mutex<HashMap<String, watch::Sender<Order>>>,
    order: &Order,
) -> Result<(), Error> {
    let mut watched = shared::storage::lock(watched)?;
    if let Some(sender) = watched.get(&order.id) {
        sender.send_if_modified(|current| newer(order, current));
        // A final order changes no more, and a channel nobody watches is not needed:
        // the watchers keep the last state.
        if order.status.is_final() || sender.receiver_count() == 0 {
            watched.remove(&order.id);
        }
    }
    Ok(())
}

/// Feeds this process's watchers the changes other replicas commit, until `stop`:
/// `LISTEN` on [`CHANGES`], and each notified order that someone here watches is read
/// again. Runs on a connection of its own.
///
/// Notifications sent while no connection listens are lost (before the first
/// `LISTEN`, and while a lost connection is down). So each time listening (re)starts,
/// and only once it has, every watched order is read again; a read that fails starts
/// over the same way, so no watcher is left with a state the database has left.
pub(super) async fn follow_changes(pool: PgPool, watched: Watched, stop: CancellationToken) {
    loop {
        let Some(mut listener) = listen(&pool, &stop).await else {
            return;
        };
        let mut caught_up = refresh(&pool, &watched, None).await;
        while caught_up {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = listener.try_recv() => next,
            };
            caught_up = match next {
                Ok(Some(notification)) => {
                    refresh(&pool, &watched, Some(notification.payload())).await
                }
                // The connection was lost, and with it the notifications in between.
                Ok(None) => false,
                Err(error) => {
                    tracing::warn!(%error, "listening for order changes failed; listening again");
                    false
                }
            };
        }
        drop(listener);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RELISTEN_PAUSE) => {}
        }
    }
}

/// The pause before listening again after a failure.
pub(super) const RELISTEN_PAUSE: Duration = Duration::from_millis(200);

/// A connection listening on [`CHANGES`], retried every second; `None` once `stop`.
pub(super) async fn listen(pool: &PgPool, stop: &CancellationToken) -> Option<PgListener> {
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(pool).await?;
            listener.listen(CHANGES).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let error = tokio::select! {
            () = stop.cancelled() => return None,
            result = listening => match result {
                Ok(listener) => return Some(listener),
                Err(error) => error,
            },
        };
        tracing::warn!(%error, "cannot listen for order changes; retrying");
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Reads again the watched order `id` (every watched order if `None`) and tells its
/// watchers; `false` if a read failed (logged; the watchers keep the state they have).
pub(super) async fn refresh(pool: &PgPool, watched: &Watched, id: Option<&str>) -> bool {
    let ids: Vec<String> = {
        let watched = watched.lock().unwrap_or_else(PoisonError::into_inner);
        match id {
            Some(id) if watched.contains_key(id) => vec![id.to_owned()],
            Some(_) => Vec::new(),
            None => watched.keys().cloned().collect(),
        }
    };
    for id in ids {
        match one(pool, "id = $1", &[&id]).await {
            Ok(Some(order)) => {
                let _ = tell_watchers(watched, &order);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(order_id = %id, error = %shared::status::ErrorChain(&error), "cannot read a changed order");
                return false;
            }
        }
    }
    true
}

/// Replaces `current` by `order` if `order` is further along (the channel may have been
/// fed by a read racing with an update).
pub(super) fn newer(order: &Order, current: &mut Order) -> bool {
    if order.is_further_along_than(current) {
        *current = order.clone();
        true
    } else {
        false
    }
}
