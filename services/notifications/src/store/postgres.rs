//! [`PgStore`]: notifications in PostgreSQL (`migrations/`), for when `DATABASE_URL`
//! is set.
//!
//! The event id goes into `processed_events` (its primary key) in the transaction that
//! inserts the notification: an event delivered again, or to two consumers at once (on
//! any replica), makes one notification. Of two racing, the second waits for the first
//! to commit, then finds the id taken: a duplicate.
//!
//! The live feed (`StreamNotifications`) carries every replica's notifications: each
//! insert notifies [`ADDED`] with the row's position (delivered at commit), and every
//! replica's listener reads that row and broadcasts it to its streams. Notifications
//! sent while a listener's connection is down are lost to it, so then its streams get
//! [`Feed::Interrupted`] (they end, telling the client to list, then stream again)
//! rather than miss some silently.

use std::time::Duration;

use async_trait::async_trait;
use shared::PageRequest;
use shared::db::{from_micros, micros};
use shared::pagination::position_key;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{PgPool, Row as _};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Added, FEED_CAPACITY, Feed, Store};
use crate::domain::Notification;
use crate::error::Error;

/// The `LISTEN/NOTIFY` channel of new notifications; the payload is the position.
const ADDED: &str = "notifications_added";

const COLUMNS: &str = "position, id, customer_id, order_id, event_id, message, \
     (EXTRACT(EPOCH FROM create_time) * 1000000)::BIGINT AS create_us";

/// The schema, embedded at build time from `services/notifications/migrations/`.
static MIGRATOR: Migrator = sqlx::migrate!();

/// Notifications in PostgreSQL.
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
    feed: broadcast::Sender<Feed>,
    /// Stops the listener task with the store.
    _listening: DropGuard,
}

impl PgStore {
    /// Connects, migrates the `notifications` schema, and listens for every replica's
    /// new notifications (listening before it returns: a stream opened then misses
    /// nothing).
    pub(crate) async fn connect(config: &shared::db::DbConfig) -> Result<Self, shared::Error> {
        let pool = shared::db::connect(config, crate::NAME, &MIGRATOR).await?;
        let listener = listen(&pool)
            .await
            .map_err(|source| shared::db::DbError::Listen {
                channel: ADDED.into(),
                source,
            })?;
        let feed = broadcast::Sender::new(FEED_CAPACITY);
        let stop = CancellationToken::new();
        tokio::spawn(follow(pool.clone(), listener, feed.clone(), stop.clone()));
        Ok(Self {
            pool,
            feed,
            _listening: stop.drop_guard(),
        })
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(ADDED).await?;
    Ok(listener)
}

/// The pause before listening again after a failure.
const RELISTEN_PAUSE: Duration = Duration::from_secs(1);

/// Broadcasts each notification named on [`ADDED`] to `feed`, until `stop`. After a
/// lost connection or a failed read it sends [`Feed::Interrupted`] and listens again.
async fn follow(
    pool: PgPool,
    mut listener: PgListener,
    feed: broadcast::Sender<Feed>,
    stop: CancellationToken,
) {
    loop {
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = listener.try_recv() => next,
            };
            let position = match next {
                Ok(Some(notification)) => notification.payload().parse::<i64>().ok(),
                // The connection was lost, and with it the notifications in between.
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "listening for new notifications failed; listening again");
                    break;
                }
            };
            match read(&pool, position).await {
                // No subscriber is not an error.
                Ok(Some(notification)) => drop(feed.send(Feed::Added(notification))),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = %shared::status::ErrorChain(&error), "cannot read a new notification");
                    break;
                }
            }
        }
        let _ = feed.send(Feed::Interrupted);
        listener = loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RELISTEN_PAUSE) => {}
            }
            match listen(&pool).await {
                Ok(listener) => break listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for new notifications; retrying")
                }
            }
        };
    }
}

/// The notification at `position`, if any.
async fn read(pool: &PgPool, position: Option<i64>) -> Result<Option<Notification>, Error> {
    let Some(position) = position else {
        return Ok(None);
    };
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE position = $1"
    ))
    .bind(position)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(notification_from).transpose()?)
}

fn notification_from(row: &PgRow) -> Result<Notification, sqlx::Error> {
    Ok(Notification {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        order_id: row.try_get("order_id")?,
        event_id: row.try_get("event_id")?,
        message: row.try_get("message")?,
        create_time: from_micros(row.try_get("create_us")?),
    })
}

#[async_trait]
impl Store for PgStore {
    async fn add(&self, notification: Notification) -> Result<Added, Error> {
        let mut tx = self.pool.begin().await?;
        let first = sqlx::query(
            "INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&notification.event_id)
        .execute(&mut *tx)
        .await?;
        if first.rows_affected() == 0 {
            return Ok(Added::Duplicate);
        }
        let position: i64 = sqlx::query_scalar(
            "INSERT INTO notifications (id, customer_id, order_id, event_id, message, \
             create_time) VALUES ($1, $2, $3, $4, $5, \
             TIMESTAMPTZ 'epoch' + $6 * INTERVAL '1 microsecond') RETURNING position",
        )
        .bind(&notification.id)
        .bind(&notification.customer_id)
        .bind(&notification.order_id)
        .bind(&notification.event_id)
        .bind(&notification.message)
        .bind(micros(notification.create_time))
        .fetch_one(&mut *tx)
        .await?;
        // Every replica's feed, this one's too: delivered when the transaction commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ADDED)
            .bind(position.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Added::New)
    }

    async fn notifications(
        &self,
        customer_id: &str,
        page: &PageRequest,
    ) -> Result<Vec<(String, Notification)>, Error> {
        let before = match &page.after {
            // A key we did not make matches nothing rather than failing.
            Some(after) => match after.parse::<i64>() {
                Ok(position) => position,
                Err(_) => return Ok(Vec::new()),
            },
            None => i64::MAX,
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE customer_id = $1 AND position < $2 \
             ORDER BY position DESC LIMIT $3"
        ))
        .bind(customer_id)
        .bind(before)
        .bind(i64::try_from(page.size + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let position: i64 = row.try_get("position")?;
                let notification = notification_from(row)?;
                let key = position_key(usize::try_from(position).unwrap_or(usize::MAX));
                Ok((key, notification))
            })
            .collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<Feed> {
        self.feed.subscribe()
    }
}
