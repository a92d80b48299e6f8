//! [`PgStore`]: notifications in PostgreSQL (`migrations/`), for when `DATABASE_URL`
//! is set.
//!
//! The event id goes into `processed_events` (its primary key) in the transaction that
//! inserts the notification: an event delivered again, or to two consumers at once (on
//! any replica), makes one notification. Of two racing, the second waits for the first
//! to commit, then finds the id taken: a duplicate.
//!
//! The live feed (`StreamNotifications`) is an in-process broadcast sent after each
//! commit: a stream sees the notifications this replica's consumer makes. With several
//! replicas, a PostgreSQL `LISTEN/NOTIFY` feed would carry every replica's.

use async_trait::async_trait;
use shared::PageRequest;
use shared::db::{from_micros, micros};
use shared::pagination::position_key;
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Row as _};
use tokio::sync::broadcast;

use super::{Added, FEED_CAPACITY, Store};
use crate::domain::Notification;
use crate::error::Error;

/// The schema, embedded at build time from `services/notifications/migrations/`.
static MIGRATOR: Migrator = sqlx::migrate!();

/// Notifications in PostgreSQL.
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
    feed: broadcast::Sender<Notification>,
}

impl PgStore {
    /// Connects and migrates the `notifications` schema.
    pub(crate) async fn connect(config: &shared::db::DbConfig) -> Result<Self, shared::Error> {
        let pool = shared::db::connect(config, crate::NAME, &MIGRATOR).await?;
        Ok(Self {
            pool,
            feed: broadcast::Sender::new(FEED_CAPACITY),
        })
    }
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
        sqlx::query(
            "INSERT INTO notifications (id, customer_id, order_id, event_id, message, \
             create_time) VALUES ($1, $2, $3, $4, $5, \
             TIMESTAMPTZ 'epoch' + $6 * INTERVAL '1 microsecond')",
        )
        .bind(&notification.id)
        .bind(&notification.customer_id)
        .bind(&notification.order_id)
        .bind(&notification.event_id)
        .bind(&notification.message)
        .bind(micros(notification.create_time))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        // No subscriber is not an error.
        let _ = self.feed.send(notification);
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
        let rows = sqlx::query(
            "SELECT position, id, customer_id, order_id, event_id, message, \
             (EXTRACT(EPOCH FROM create_time) * 1000000)::BIGINT AS create_us \
             FROM notifications WHERE customer_id = $1 AND position < $2 \
             ORDER BY position DESC LIMIT $3",
        )
        .bind(customer_id)
        .bind(before)
        .bind(i64::try_from(page.size + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let position: i64 = row.try_get("position")?;
                let notification = Notification {
                    id: row.try_get("id")?,
                    customer_id: row.try_get("customer_id")?,
                    order_id: row.try_get("order_id")?,
                    event_id: row.try_get("event_id")?,
                    message: row.try_get("message")?,
                    create_time: from_micros(row.try_get("create_us")?),
                };
                let key = position_key(usize::try_from(position).unwrap_or(usize::MAX));
                Ok((key, notification))
            })
            .collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.feed.subscribe()
    }
}
