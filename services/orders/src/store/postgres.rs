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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use shared::PageRequest;
use shared::db::{from_micros, micros};
use shared::events::{Event, EventPublisher};
use shared::pagination::position_key;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{PgConnection, PgPool, Row as _};
use tokio::sync::{Notify, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Created, Store};
use crate::domain::{Line, Order, Status};
use crate::error::{Error, storage_error};
use crate::outbox::{self, Outbox, Relayed};

/// The schema, embedded at build time from `services/orders/migrations/`.
static MIGRATOR: Migrator = sqlx::migrate!();

/// The `LISTEN/NOTIFY` channel of order changes; the payload is the order id.
const CHANGES: &str = "orders_changed";

/// The watch channel of each order someone in this process watches.
type Watched = Arc<Mutex<HashMap<String, watch::Sender<Order>>>>;

/// Orders and their outbox in PostgreSQL.
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
    outbox_signal: Notify,
    watched: Watched,
    /// Stops the listener task with the store.
    _listening: DropGuard,
}

const COLUMNS: &str = "position, id, request_id, customer_id, placed_by, card_token, currency_code, \
     total_minor, status, status_reason, payment_id, \
     (EXTRACT(EPOCH FROM create_time) * 1000000)::BIGINT AS create_us, \
     (EXTRACT(EPOCH FROM update_time) * 1000000)::BIGINT AS update_us";

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

/// The orders of `rows` (in their order) with their lines, each with its position.
async fn load(pool: &PgPool, rows: Vec<PgRow>) -> Result<Vec<(i64, Order)>, Error> {
    let ids: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?;
    let mut lines: HashMap<String, Vec<Line>> = HashMap::new();
    let line_rows = sqlx::query(
        "SELECT order_id, sku, quantity, unit_currency, unit_minor FROM order_lines \
         WHERE order_id = ANY($1) ORDER BY order_id, line_no",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    for row in line_rows {
        lines
            .entry(row.try_get("order_id")?)
            .or_default()
            .push(Line {
                sku: row.try_get("sku")?,
                quantity: row.try_get("quantity")?,
                unit_price: shared::Money::new(
                    row.try_get::<String, _>("unit_currency")?,
                    row.try_get("unit_minor")?,
                ),
            });
    }
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("id")?;
            let order_lines = lines.remove(&id).unwrap_or_default();
            Ok((row.try_get("position")?, order_from(row, order_lines)?))
        })
        .collect()
}

/// The order `condition` (with `$1`, `$2`, … for `values`) selects, if any.
async fn one(pool: &PgPool, condition: &str, values: &[&str]) -> Result<Option<Order>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE {condition}");
    let mut query = sqlx::query(&sql);
    for value in values {
        query = query.bind(*value);
    }
    let row = query.fetch_optional(pool).await?;
    let orders = load(pool, row.into_iter().collect()).await?;
    Ok(orders.into_iter().next().map(|(_, order)| order))
}

/// Tells this process's watchers of `order` its new state.
fn tell_watchers(
    watched: &Mutex<HashMap<String, watch::Sender<Order>>>,
    order: &Order,
) -> Result<(), Error> {
    let mut watched = watched
        .lock()
        .map_err(|e| storage_error(std::io::Error::other(e.to_string())))?;
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
async fn follow_changes(pool: PgPool, watched: Watched, stop: CancellationToken) {
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
const RELISTEN_PAUSE: Duration = Duration::from_millis(200);

/// A connection listening on [`CHANGES`], retried every second; `None` once `stop`.
async fn listen(pool: &PgPool, stop: &CancellationToken) -> Option<PgListener> {
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
async fn refresh(pool: &PgPool, watched: &Watched, id: Option<&str>) -> bool {
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
fn newer(order: &Order, current: &mut Order) -> bool {
    let progress = |o: &Order| (o.status.is_final(), o.payment_id.is_some());
    if progress(order) > progress(current) {
        *current = order.clone();
        true
    } else {
        false
    }
}

fn status_of(order: &Order) -> (&'static str, &str) {
    match &order.status {
        Status::Pending => ("pending", ""),
        Status::Confirmed => ("confirmed", ""),
        Status::Rejected { reason } => ("rejected", reason),
        Status::Failed { reason } => ("failed", reason),
    }
}

fn order_from(row: &PgRow, lines: Vec<Line>) -> Result<Order, sqlx::Error> {
    let reason: String = row.try_get("status_reason")?;
    let status = match row.try_get::<&str, _>("status")? {
        "pending" => Status::Pending,
        "confirmed" => Status::Confirmed,
        "rejected" => Status::Rejected { reason },
        "failed" => Status::Failed { reason },
        other => {
            return Err(sqlx::Error::Decode(
                format!("unknown order status {other:?}").into(),
            ));
        }
    };
    Ok(Order {
        id: row.try_get("id")?,
        request_id: row.try_get("request_id")?,
        customer_id: row.try_get("customer_id")?,
        placed_by: row.try_get("placed_by")?,
        card_token: row.try_get("card_token")?,
        lines,
        total: shared::Money::new(
            row.try_get::<String, _>("currency_code")?,
            row.try_get("total_minor")?,
        ),
        status,
        payment_id: row.try_get("payment_id")?,
        create_time: from_micros(row.try_get("create_us")?),
        update_time: from_micros(row.try_get("update_us")?),
    })
}

/// Records `event` of order `order_id` in the outbox, unless recorded before.
async fn record(
    connection: &mut PgConnection,
    order_id: &str,
    event: &Event,
) -> Result<(), sqlx::Error> {
    let (names, values): (Vec<&str>, Vec<&str>) = event
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .unzip();
    sqlx::query(
        "INSERT INTO outbox (event_id, order_id, subject, header_names, header_values, payload) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(order_id)
    .bind(&event.subject)
    .bind(&names)
    .bind(&values)
    .bind(event.payload.as_ref())
    .execute(connection)
    .await?;
    Ok(())
}

fn event_from(row: &PgRow) -> Result<Event, sqlx::Error> {
    let names: Vec<String> = row.try_get("header_names")?;
    let values: Vec<String> = row.try_get("header_values")?;
    Ok(Event {
        id: row.try_get("event_id")?,
        subject: row.try_get("subject")?,
        headers: names.into_iter().zip(values).collect(),
        payload: row.try_get::<Vec<u8>, _>("payload")?.into(),
    })
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
        let updated = sqlx::query(
            "UPDATE orders SET status = $2, status_reason = $3, payment_id = $4, \
             update_time = TIMESTAMPTZ 'epoch' + $5 * INTERVAL '1 microsecond' \
             WHERE id = $1 AND status = 'pending' AND (saga_owner IS NULL \
             OR saga_owner = $6 OR saga_claimed_until IS NULL OR saga_claimed_until < now())",
        )
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
                 SELECT id FROM orders WHERE status = 'pending' AND ( \
                     saga_claimed_until < now() OR (saga_claimed_until IS NULL \
                     AND update_time <= now() - $3 * INTERVAL '1 microsecond')) \
                 ORDER BY position LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}"
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
        let renewed = sqlx::query(
            "UPDATE orders SET saga_owner = $2, \
             saga_claimed_until = now() + $3 * INTERVAL '1 microsecond' \
             WHERE id = $1 AND status = 'pending' AND (saga_owner = $2 \
             OR saga_claimed_until IS NULL OR saga_claimed_until < now())",
        )
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
