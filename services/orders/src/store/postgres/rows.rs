//! The rows of orders, their lines and their outbox events, to and from the domain's
//! types.

use std::collections::HashMap;
use std::sync::LazyLock;

use shared::db::from_micros;
use shared::events::Event;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row as _};

use crate::domain::{Line, Order, Status};
use crate::error::Error;

pub(super) const COLUMNS: &str = "position, id, request_id, customer_id, placed_by, card_token, currency_code, \
     total_minor, status, status_reason, payment_id, \
     (EXTRACT(EPOCH FROM create_time) * 1000000)::BIGINT AS create_us, \
     (EXTRACT(EPOCH FROM update_time) * 1000000)::BIGINT AS update_us";

/// The orders of `rows` (in their order) with their lines, each with its position.
pub(super) async fn load(pool: &PgPool, rows: Vec<PgRow>) -> Result<Vec<(i64, Order)>, Error> {
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
pub(super) async fn one(
    pool: &PgPool,
    condition: &str,
    values: &[&str],
) -> Result<Option<Order>, Error> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE {condition}");
    let mut query = sqlx::query(&sql);
    for value in values {
        query = query.bind(*value);
    }
    let row = query.fetch_optional(pool).await?;
    let orders = load(pool, row.into_iter().collect()).await?;
    Ok(orders.into_iter().next().map(|(_, order)| order))
}

/// The stored name and reason of `order`'s status.
pub(super) fn status_of(order: &Order) -> (&'static str, &str) {
    status_name(&order.status)
}

/// The condition on `status` of the rows an update, a claim or a renewal may change:
/// those in a state the domain calls open ([`Status::OPEN`]), e.g.
/// `status IN ('pending')`. Written out rather than bound, so that the planner can use
/// the partial index on open orders (`migrations/0002_saga_claims.sql`).
pub(super) static OPEN: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<String> = Status::OPEN
        .iter()
        .map(|status| format!("'{}'", status_name(status).0))
        .collect();
    format!("status IN ({})", names.join(", "))
});

fn status_name(status: &Status) -> (&'static str, &str) {
    match status {
        Status::Pending => ("pending", ""),
        Status::Confirmed => ("confirmed", ""),
        Status::Rejected { reason } => ("rejected", reason),
        Status::Failed { reason } => ("failed", reason),
    }
}

pub(super) fn order_from(row: &PgRow, lines: Vec<Line>) -> Result<Order, sqlx::Error> {
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
pub(super) async fn record(
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

pub(super) fn event_from(row: &PgRow) -> Result<Event, sqlx::Error> {
    let names: Vec<String> = row.try_get("header_names")?;
    let values: Vec<String> = row.try_get("header_values")?;
    Ok(Event {
        id: row.try_get("event_id")?,
        subject: row.try_get("subject")?,
        headers: names.into_iter().zip(values).collect(),
        payload: row.try_get::<Vec<u8>, _>("payload")?.into(),
    })
}
