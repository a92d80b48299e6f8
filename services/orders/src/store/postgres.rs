//! [`PgStore`]: orders and their outbox in PostgreSQL (`migrations/`), for when
//! `DATABASE_URL` is set.
//!
//! - `(placed_by, request_id)` is a unique constraint: of racing creates, one inserts
//!   and the others find its order, whatever replica they run on. Request ids are
//!   scoped by who placed the order, so two callers never share one.
//! - An order's row and its event's outbox row are written in one transaction, so a
//!   state change is never committed without its event, nor an event without its change.
//! - The relay claims pending events with `FOR UPDATE SKIP LOCKED`, so relays of several
//!   replicas never work on the same rows, and skips an event while an earlier one of
//!   the same order is pending (claimed by another relay, or failing): each order's
//!   events are published in the order they were written.
//! - A stranded saga (its process died) is claimed with `FOR UPDATE SKIP LOCKED` and a
//!   lease (`saga_owner`, `saga_claimed_until`, on the database's clock): of replicas
//!   looking at once, each order goes to one, and again to one once the lease lapses.
//! - Watchers (`WatchOrder`, identical requests waiting for a saga) are in-process watch
//!   channels, fed after each commit of this process and, for changes committed by
//!   other replicas, through PostgreSQL `LISTEN/NOTIFY`: each update notifies
//!   [`CHANGES`] with the order id (delivered at commit), and a listener task re-reads
//!   the watched orders it names. After a lost listening connection it re-reads every
//!   watched order, since notifications in between are gone.

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::Duration;

use async_trait::async_trait;
use shared::PageRequest;
use shared::db::micros;
use shared::events::{Event, EventPublisher};
use shared::pagination::position_key;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row as _};
use tokio::sync::{Notify, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use rows::{COLUMNS, OPEN, event_from, load, one, record, status_of};
use watchers::{CHANGES, Watched, follow_changes, newer, tell_watchers};

use super::{Created, Store};
use crate::domain::Order;
use crate::error::Error;
use crate::outbox::{self, Outbox, Relayed};

mod rows;
mod watchers;

/// The schema, embedded at build time from `services/orders/migrations/`.
static MIGRATOR: Migrator = sqlx::migrate!();

/// Orders and their outbox in PostgreSQL.
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
    outbox_signal: Notify,
    watched: Watched,
    /// Stops the listener task with the store.
    _listening: DropGuard,
}

impl PgStore {
    /// Connects and migrates the `orders` schema.
    pub(crate) async fn connect(config: &shared::db::DbConfig) -> Result<Self, shared::Error> {
        let pool = shared::db::connect(config, crate::NAME, &MIGRATOR).await?;
        let watched = Watched::default();
        let stop = CancellationToken::new();
        tokio::spawn(follow_changes(pool.clone(), watched.clone(), stop.clone()));
        Ok(Self {
            pool,
            outbox_signal: Notify::new(),
            watched,
            _listening: stop.drop_guard(),
        })
    }

    /// How many events wait to be published.
    #[cfg(test)]
    pub(crate) async fn pending_events(&self) -> Result<i64, Error> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_time IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    fn watched(&self) -> Result<MutexGuard<'_, HashMap<String, watch::Sender<Order>>>, Error> {
        Ok(shared::storage::lock(&self.watched)?)
    }

    async fn load(&self, rows: Vec<PgRow>) -> Result<Vec<(i64, Order)>, Error> {
        load(&self.pool, rows).await
    }

    async fn one(&self, condition: &str, values: &[&str]) -> Result<Option<Order>, Error> {
        one(&self.pool, condition, values).await
    }

    fn tell_watchers(&self, order: &Order) -> Result<(), Error> {
        tell_watchers(&self.watched, order)
    }

    /// How many orders this process keeps a watch channel for.
    #[cfg(test)]
    pub(crate) fn watched_len(&self) -> usize {
        self.watched.lock().map_or(0, |watched| watched.len())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create(&self, order: Order, event: Event) -> Result<Created, Error> {
        let mut tx = self.pool.begin().await?;
        let (status, reason) = status_of(&order);
        // A racing create with the same request_id waits here for this transaction,
        // then inserts nothing and reads this order.
        let inserted = sqlx::query(
            "INSERT INTO orders (id, request_id, customer_id, placed_by, card_token, \
             currency_code, total_minor, status, status_reason, payment_id, create_time, \
             update_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             TIMESTAMPTZ 'epoch' + $11 * INTERVAL '1 microsecond', \
             TIMESTAMPTZ 'epoch' + $12 * INTERVAL '1 microsecond') \
             ON CONFLICT (placed_by, request_id) DO NOTHING",
        )
        .bind(&order.id)
        .bind(&order.request_id)
        .bind(&order.customer_id)
        .bind(&order.placed_by)
        .bind(&order.card_token)
        .bind(&order.total.currency)
        .bind(order.total.minor)
        .bind(status)
        .bind(reason)
        .bind(order.payment_id.as_deref())
        .bind(micros(order.create_time))
        .bind(micros(order.update_time))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            drop(tx);
            let existing = self
                .order_by_request(&order.placed_by, &order.request_id)
                .await?
                .ok_or_else(|| Error::OrderNotFound {
                    id: order.id.clone(),
                })?;
            return Ok(Created::Existing(existing));
        }
        for (line_no, line) in order.lines.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_currency, \
                 unit_minor) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&order.id)
            .bind(i32::try_from(line_no).unwrap_or(i32::MAX))
            .bind(&line.sku)
            .bind(line.quantity)
            .bind(&line.unit_price.currency)
            .bind(line.unit_price.minor)
            .execute(&mut *tx)
            .await?;
        }
        record(&mut tx, &order.id, &event).await?;
        tx.commit().await?;
        self.outbox_signal.notify_one();
        Ok(Created::New(order))
    }

    async fn update(&self, order: &Order, owner: &str, event: Option<Event>) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let (status, reason) = status_of(order);
        let updated = sqlx::query(&format!(
            "UPDATE orders SET status = $2, status_reason = $3, payment_id = $4, \
             update_time = TIMESTAMPTZ 'epoch' + $5 * INTERVAL '1 microsecond' \
             WHERE id = $1 AND {open} AND (saga_owner IS NULL \
             OR saga_owner = $6 OR saga_claimed_until IS NULL OR saga_claimed_until < now())",
            open = *OPEN
        ))
        .bind(&order.id)
        .bind(status)
        .bind(reason)
        .bind(order.payment_id.as_deref())
        .bind(micros(order.update_time))
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            drop(tx);
            // Unknown, or changed by a saga that is not this one.
            self.order(&order.id).await?;
            return Err(Error::Superseded {
                order_id: order.id.clone(),
            });
        }
        if let Some(event) = &event {
            record(&mut tx, &order.id, event).await?;
        }
        // Other replicas' watchers: delivered when the transaction commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES)
            .bind(&order.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if event.is_some() {
            self.outbox_signal.notify_one();
        }
        self.tell_watchers(order)
    }

    async fn order(&self, id: &str) -> Result<Order, Error> {
        self.one("id = $1", &[id])
            .await?
            .ok_or_else(|| Error::OrderNotFound { id: id.into() })
    }

    async fn order_by_request(
        &self,
        placed_by: &str,
        request_id: &str,
    ) -> Result<Option<Order>, Error> {
        self.one(
            "placed_by = $1 AND request_id = $2",
            &[placed_by, request_id],
        )
        .await
    }

    async fn orders(
        &self,
        customer_id: &str,
        page: &PageRequest,
    ) -> Result<Vec<(String, Order)>, Error> {
        let before = match &page.after {
            // A key we did not make matches nothing rather than failing.
            Some(after) => match after.parse::<i64>() {
                Ok(position) => position,
                Err(_) => return Ok(Vec::new()),
            },
            None => i64::MAX,
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM orders WHERE customer_id = $1 AND position < $2 \
             ORDER BY position DESC LIMIT $3"
        ))
        .bind(customer_id)
        .bind(before)
        .bind(i64::try_from(page.size + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(self
            .load(rows)
            .await?
            .into_iter()
            .map(|(position, order)| {
                let key = position_key(usize::try_from(position).unwrap_or(usize::MAX));
                (key, order)
            })
            .collect())
    }

    async fn watch(&self, id: &str) -> Result<watch::Receiver<Order>, Error> {
        let order = self.order(id).await?;
        if order.status.is_final() {
            // It changes no more: nothing to keep for it.
            return Ok(watch::channel(order).1);
        }
        let receiver = {
            let mut watched = self.watched()?;
            // Channels whose watchers all left, of orders still pending.
            watched.retain(|_, sender| sender.receiver_count() > 0);
            let sender = watched
                .entry(id.to_owned())
                .or_insert_with(|| watch::Sender::new(order.clone()));
            sender.send_if_modified(|current| newer(&order, current));
            sender.subscribe()
        };
        // An update committed between the read above and the subscription told no one:
        // read again now that every later update reaches the channel.
        let latest = self.order(id).await?;
        self.tell_watchers(&latest)?;
        Ok(receiver)
    }

    async fn claim_stranded(
        &self,
        owner: &str,
        stale_after: Duration,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Order>, Error> {
        // The rows another claimer holds are skipped, and once it commits they no
        // longer match: each order goes to one claimer. Claim times are the database's
        // clock, so replicas' clocks need not agree (update_time is a replica's).
        let rows = sqlx::query(&format!(
            "UPDATE orders SET saga_owner = $1, \
             saga_claimed_until = now() + $2 * INTERVAL '1 microsecond' \
             WHERE id IN ( \
                 SELECT id FROM orders WHERE {open} AND ( \
                     saga_claimed_until < now() OR (saga_claimed_until IS NULL \
                     AND update_time <= now() - $3 * INTERVAL '1 microsecond')) \
                 ORDER BY position LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}",
            open = *OPEN
        ))
        .bind(owner)
        .bind(duration_micros(lease))
        .bind(duration_micros(stale_after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut orders = self.load(rows).await?;
        orders.sort_by_key(|(position, _)| *position);
        Ok(orders.into_iter().map(|(_, order)| order).collect())
    }

    async fn renew_claim(&self, id: &str, owner: &str, lease: Duration) -> Result<bool, Error> {
        let renewed = sqlx::query(&format!(
            "UPDATE orders SET saga_owner = $2, \
             saga_claimed_until = now() + $3 * INTERVAL '1 microsecond' \
             WHERE id = $1 AND {open} AND (saga_owner = $2 \
             OR saga_claimed_until IS NULL OR saga_claimed_until < now())",
            open = *OPEN
        ))
        .bind(id)
        .bind(owner)
        .bind(duration_micros(lease))
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }
}

#[async_trait]
impl Outbox for PgStore {
    async fn relay(
        &self,
        limit: usize,
        lease: Duration,
        publisher: &dyn EventPublisher,
    ) -> Result<Relayed, Error> {
        // Claimed with a lease in one statement: other relays skip these events (and
        // the later events of their orders) until they are marked or the lease lapses.
        // No transaction stays open while the broker answers.
        let claim = shared::id::new("relay");
        let mut rows = sqlx::query(
            "UPDATE outbox SET relay_claim = $1, \
             relay_claimed_until = now() + $2 * INTERVAL '1 microsecond' \
             WHERE position IN ( \
                 SELECT position FROM outbox o WHERE sent_time IS NULL \
                 AND (relay_claimed_until IS NULL OR relay_claimed_until < now()) \
                 AND NOT EXISTS ( \
                     SELECT 1 FROM outbox earlier WHERE earlier.order_id = o.order_id \
                     AND earlier.sent_time IS NULL AND earlier.position < o.position) \
                 ORDER BY position LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING position, event_id, subject, header_names, header_values, payload",
        )
        .bind(&claim)
        .bind(duration_micros(lease))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.sort_by_key(|row| row.try_get::<i64, _>("position").unwrap_or(i64::MAX));
        let mut relayed = Relayed::default();
        let mut published = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Err(error) = outbox::publish(publisher, event_from(row)?).await {
                relayed.failure = Some(error);
                break;
            }
            published.push(row.try_get::<i64, _>("position")?);
        }
        // What was published is sent; the rest is released for the next pass.
        sqlx::query(
            "UPDATE outbox SET sent_time = CASE WHEN position = ANY($2) THEN now() END, \
             relay_claim = NULL, relay_claimed_until = NULL \
             WHERE relay_claim = $1 AND sent_time IS NULL",
        )
        .bind(&claim)
        .bind(&published)
        .execute(&self.pool)
        .await?;
        relayed.sent = published.len();
        Ok(relayed)
    }

    fn outbox_signal(&self) -> &Notify {
        &self.outbox_signal
    }

    async fn prune_published(&self, retention: Duration, limit: usize) -> Result<u64, Error> {
        let deleted = sqlx::query(
            "DELETE FROM outbox WHERE position IN ( \
                 SELECT position FROM outbox \
                 WHERE sent_time <= now() - $1 * INTERVAL '1 microsecond' LIMIT $2)",
        )
        .bind(duration_micros(retention))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }
}

/// `duration` in whole microseconds, for `n * INTERVAL '1 microsecond'`.
fn duration_micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
