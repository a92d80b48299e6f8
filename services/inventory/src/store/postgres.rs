//! [`PgStore`]: products and reservations in PostgreSQL (`migrations/`), for when
//! `DATABASE_URL` is set.
//!
//! Correct under any concurrency, across replicas, because the database decides:
//! - stock moves with conditional updates (`… SET available = available - n WHERE
//!   available >= n`), so two reservations can never both take the last unit;
//! - each reservation, commit, release and restock is one transaction, all or nothing;
//! - rows of several products are locked in sku order, so two transactions never wait
//!   for each other in a cycle (no deadlocks);
//! - the reservation id is the primary key: of two identical requests racing, the second
//!   waits for the first to commit, then finds its reservation.

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use shared::PageRequest;
use shared::db::{from_micros, micros};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool, Row as _};

use super::Store;
use crate::domain::{
    Change, Item, NewReservation, Product, Reservation, ReservationState, Stock, units,
};
use crate::error::{Error, Shortage};

/// The schema, embedded at build time from `services/inventory/migrations/`.
static MIGRATOR: Migrator = sqlx::migrate!();

/// Products and reservations in PostgreSQL.
#[derive(Clone, Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
}

/// The columns of a product, times as microseconds (see [`shared::db::micros`]).
const PRODUCT_COLUMNS: &str = "sku, name, description, price_currency, price_minor, \
     available, reserved, sold, (EXTRACT(EPOCH FROM update_time) * 1000000)::BIGINT AS update_us";

impl PgStore {
    /// Connects, migrates the `inventory` schema and adds the products of `catalog`
    /// that are missing (existing ones keep their stock): every replica may do it.
    pub(crate) async fn connect(
        config: &shared::db::DbConfig,
        catalog: Vec<Product>,
    ) -> Result<Self, shared::Error> {
        let pool = shared::db::connect(config, crate::NAME, &MIGRATOR).await?;
        let store = Self { pool };
        store
            .seed(catalog)
            .await
            .map_err(|e| shared::db::DbError::Seed {
                schema: crate::NAME.to_owned(),
                source: e,
            })?;
        Ok(store)
    }

    async fn seed(&self, catalog: Vec<Product>) -> Result<(), sqlx::Error> {
        for product in catalog {
            sqlx::query(
                "INSERT INTO products (sku, name, description, price_currency, price_minor, \
                 available, reserved, sold, update_time) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                 TIMESTAMPTZ 'epoch' + $9 * INTERVAL '1 microsecond') \
                 ON CONFLICT (sku) DO NOTHING",
            )
            .bind(&product.sku)
            .bind(&product.name)
            .bind(&product.description)
            .bind(&product.price.currency)
            .bind(product.price.minor)
            .bind(product.stock.available)
            .bind(product.stock.reserved)
            .bind(product.stock.sold)
            .bind(micros(product.update_time))
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

fn product_from(row: &sqlx::postgres::PgRow) -> Result<Product, sqlx::Error> {
    Ok(Product {
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price: shared::Money::new(
            row.try_get::<String, _>("price_currency")?,
            row.try_get("price_minor")?,
        ),
        stock: Stock {
            available: row.try_get("available")?,
            reserved: row.try_get("reserved")?,
            sold: row.try_get("sold")?,
        },
        update_time: from_micros(row.try_get("update_us")?),
    })
}

fn state_name(state: ReservationState) -> &'static str {
    match state {
        ReservationState::Reserved => "reserved",
        ReservationState::Committed => "committed",
        ReservationState::Released => "released",
    }
}

fn state_from(name: &str) -> Result<ReservationState, sqlx::Error> {
    match name {
        "reserved" => Ok(ReservationState::Reserved),
        "committed" => Ok(ReservationState::Committed),
        "released" => Ok(ReservationState::Released),
        other => Err(sqlx::Error::Decode(
            format!("unknown reservation state {other:?}").into(),
        )),
    }
}

/// The reservation `id` with its items, locked for the rest of the transaction with
/// `lock`; `None` if unknown.
async fn reservation(
    connection: &mut PgConnection,
    id: &str,
    lock: bool,
) -> Result<Option<Reservation>, sqlx::Error> {
    let query = format!(
        "SELECT state, (EXTRACT(EPOCH FROM create_time) * 1000000)::BIGINT AS create_us, \
         (EXTRACT(EPOCH FROM update_time) * 1000000)::BIGINT AS update_us \
         FROM reservations WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let Some(row) = sqlx::query(&query)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?
    else {
        return Ok(None);
    };
    let items = sqlx::query_as::<_, (String, i32)>(
        "SELECT sku, quantity FROM reservation_items WHERE reservation_id = $1 ORDER BY sku",
    )
    .bind(id)
    .fetch_all(&mut *connection)
    .await?
    .into_iter()
    .map(|(sku, quantity)| Item { sku, quantity })
    .collect();
    Ok(Some(Reservation {
        id: id.to_owned(),
        items,
        state: state_from(row.try_get("state")?)?,
        create_time: from_micros(row.try_get("create_us")?),
        update_time: from_micros(row.try_get("update_us")?),
    }))
}

/// Inserts the reservation row unless `id` exists; whether it did.
async fn insert_reservation(
    connection: &mut PgConnection,
    id: &str,
    state: ReservationState,
    now: SystemTime,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO reservations (id, state, create_time, update_time) \
         VALUES ($1, $2, TIMESTAMPTZ 'epoch' + $3 * INTERVAL '1 microsecond', \
         TIMESTAMPTZ 'epoch' + $3 * INTERVAL '1 microsecond') \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(state_name(state))
    .bind(micros(now))
    .execute(&mut *connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

async fn set_state(
    connection: &mut PgConnection,
    id: &str,
    state: ReservationState,
    now: SystemTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE reservations SET state = $2, \
         update_time = TIMESTAMPTZ 'epoch' + $3 * INTERVAL '1 microsecond' WHERE id = $1",
    )
    .bind(id)
    .bind(state_name(state))
    .bind(micros(now))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Locks the products of `items` in sku order (`items` are sorted), so that
/// transactions touching several products never deadlock.
async fn lock_products(connection: &mut PgConnection, items: &[Item]) -> Result<(), sqlx::Error> {
    let skus: Vec<&str> = items.iter().map(|i| i.sku.as_str()).collect();
    sqlx::query("SELECT sku FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE")
        .bind(&skus)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Moves each item's units from bucket `from` to bucket `to` (column names).
async fn move_stock(
    connection: &mut PgConnection,
    items: &[Item],
    from: &str,
    to: &str,
    now: SystemTime,
) -> Result<(), sqlx::Error> {
    lock_products(connection, items).await?;
    let query = format!(
        "UPDATE products SET {from} = {from} - $2, {to} = {to} + $2, \
         update_time = TIMESTAMPTZ 'epoch' + $3 * INTERVAL '1 microsecond' WHERE sku = $1"
    );
    for item in items {
        sqlx::query(&query)
            .bind(&item.sku)
            .bind(units(item.quantity))
            .bind(micros(now))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// The available units of `sku`, or [`Error::ProductNotFound`].
async fn available(connection: &mut PgConnection, sku: &str) -> Result<i64, Error> {
    sqlx::query_scalar("SELECT available FROM products WHERE sku = $1")
        .bind(sku)
        .fetch_optional(&mut *connection)
        .await?
        .ok_or_else(|| Error::ProductNotFound { sku: sku.into() })
}

#[async_trait]
impl Store for PgStore {
    async fn product(&self, sku: &str) -> Result<Product, Error> {
        let row = sqlx::query(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM products WHERE sku = $1"
        ))
        .bind(sku)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::ProductNotFound { sku: sku.into() })?;
        Ok(product_from(&row)?)
    }

    async fn products(&self, page: &PageRequest) -> Result<Vec<Product>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM products \
             WHERE $1::TEXT IS NULL OR sku > $1 ORDER BY sku LIMIT $2"
        ))
        .bind(page.after.as_deref())
        .bind(i64::try_from(page.size + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(product_from).collect::<Result<_, _>>()?)
    }

    async fn reserve(&self, request: NewReservation) -> Result<Reservation, Error> {
        let mut tx = self.pool.begin().await?;
        let now = shared::db::truncate_to_micros(SystemTime::now());
        // The id first: an identical request racing this one waits here until this
        // transaction ends, then finds the reservation (or, if this one failed, makes it).
        if !insert_reservation(&mut tx, &request.id, ReservationState::Reserved, now).await? {
            let existing = reservation(&mut tx, &request.id, false)
                .await?
                .ok_or_else(|| Error::ReservationNotFound {
                    id: request.id.clone(),
                })?;
            return existing.answer(&request);
        }

        // Items are sorted by sku: rows are locked in that order.
        let mut shortages = Vec::new();
        for item in &request.items {
            let taken = sqlx::query(
                "UPDATE products SET available = available - $2, reserved = reserved + $2, \
                 update_time = TIMESTAMPTZ 'epoch' + $3 * INTERVAL '1 microsecond' \
                 WHERE sku = $1 AND available >= $2",
            )
            .bind(&item.sku)
            .bind(units(item.quantity))
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() == 0 {
                // Unknown, or too few units: either way the transaction is rolled back.
                shortages.push(Shortage {
                    sku: item.sku.clone(),
                    requested: item.quantity,
                    available: available(&mut tx, &item.sku).await?,
                });
            }
        }
        if !shortages.is_empty() {
            return Err(Error::InsufficientStock(shortages));
        }

        let (skus, quantities): (Vec<&str>, Vec<i32>) = request
            .items
            .iter()
            .map(|i| (i.sku.as_str(), i.quantity))
            .unzip();
        sqlx::query(
            "INSERT INTO reservation_items (reservation_id, sku, quantity) \
             SELECT $1, sku, quantity FROM UNNEST($2::TEXT[], $3::INTEGER[]) AS i (sku, quantity)",
        )
        .bind(&request.id)
        .bind(&skus)
        .bind(&quantities)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Reservation {
            id: request.id,
            items: request.items,
            state: ReservationState::Reserved,
            create_time: now,
            update_time: now,
        })
    }

    async fn commit(&self, id: &str) -> Result<Reservation, Error> {
        let mut tx = self.pool.begin().await?;
        let found = reservation(&mut tx, id, true)
            .await?
            .ok_or_else(|| Error::ReservationNotFound { id: id.into() })?;
        let mut reservation = match found.commit()? {
            Change::Done(reservation) => return Ok(reservation),
            Change::Apply(reservation) => reservation,
        };
        let now = shared::db::truncate_to_micros(SystemTime::now());
        move_stock(&mut tx, &reservation.items, "reserved", "sold", now).await?;
        set_state(&mut tx, id, ReservationState::Committed, now).await?;
        tx.commit().await?;
        reservation.state = ReservationState::Committed;
        reservation.update_time = now;
        Ok(reservation)
    }

    async fn release(&self, id: &str) -> Result<Reservation, Error> {
        let mut tx = self.pool.begin().await?;
        let now = shared::db::truncate_to_micros(SystemTime::now());
        // Unknown: record the release (a tombstone), so a late reserve holds nothing.
        if insert_reservation(&mut tx, id, ReservationState::Released, now).await? {
            tx.commit().await?;
            return Ok(Reservation {
                id: id.into(),
                items: Vec::new(),
                state: ReservationState::Released,
                create_time: now,
                update_time: now,
            });
        }
        let found = reservation(&mut tx, id, true)
            .await?
            .ok_or_else(|| Error::ReservationNotFound { id: id.into() })?;
        let mut reservation = match found.release()? {
            Change::Done(reservation) => return Ok(reservation),
            Change::Apply(reservation) => reservation,
        };
        move_stock(&mut tx, &reservation.items, "reserved", "available", now).await?;
        set_state(&mut tx, id, ReservationState::Released, now).await?;
        tx.commit().await?;
        reservation.state = ReservationState::Released;
        reservation.update_time = now;
        Ok(reservation)
    }

    async fn restock(&self, items: &[Item]) -> Result<Vec<Product>, Error> {
        // One update per sku, in sku order (no deadlocks), with the units of its items.
        let mut per_sku: BTreeMap<&str, i64> = BTreeMap::new();
        for item in items {
            let units_of_sku = per_sku.entry(item.sku.as_str()).or_default();
            *units_of_sku = units_of_sku.saturating_add(units(item.quantity));
        }
        let mut tx = self.pool.begin().await?;
        let now = shared::db::truncate_to_micros(SystemTime::now());
        let mut products = Vec::with_capacity(per_sku.len());
        for (sku, n) in per_sku {
            let row = sqlx::query(&format!(
                "UPDATE products SET available = CASE \
                 WHEN available > 9223372036854775807 - $2 THEN 9223372036854775807 \
                 ELSE available + $2 END, \
                 update_time = TIMESTAMPTZ 'epoch' + $3 * INTERVAL '1 microsecond' \
                 WHERE sku = $1 RETURNING {PRODUCT_COLUMNS}"
            ))
            .bind(sku)
            .bind(n)
            .bind(micros(now))
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::ProductNotFound { sku: sku.into() })?;
            products.push(product_from(&row)?);
        }
        tx.commit().await?;
        Ok(products)
    }
}
