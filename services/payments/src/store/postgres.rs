//! [`PgStore`]: payments in PostgreSQL (`migrations/`), for when `DATABASE_URL` is set.
//!
//! `request_id` is a unique constraint: of concurrent retries of one charge (on any
//! replica), one insert wins and the others read the winner, so a card is charged once.
//! A refund is one conditional update (`WHERE status = 'captured'`).

use std::time::SystemTime;

use async_trait::async_trait;
use shared::PageRequest;
use shared::db::{from_micros, micros};
use shared::pagination::position_key;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row as _};

use super::{Store, new_payment, outcome, retried};
use crate::domain::{Charge, Payment, PaymentStatus};
use crate::error::Error;

/// The schema, embedded at build time from `services/payments/migrations/`.
static MIGRATOR: Migrator = sqlx::migrate!();

/// Payments in PostgreSQL.
#[derive(Clone, Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
}

const COLUMNS: &str = "position, id, request_id, order_id, customer_id, currency_code, \
     amount_minor, status, status_reason, \
     (EXTRACT(EPOCH FROM create_time) * 1000000)::BIGINT AS create_us, \
     (EXTRACT(EPOCH FROM update_time) * 1000000)::BIGINT AS update_us";

impl PgStore {
    /// Connects and migrates the `payments` schema.
    pub(crate) async fn connect(config: &shared::db::DbConfig) -> Result<Self, shared::Error> {
        let pool = shared::db::connect(config, crate::NAME, &MIGRATOR).await?;
        Ok(Self { pool })
    }

    async fn by_request_id(&self, request_id: &str) -> Result<Option<Payment>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE request_id = $1"
        ))
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(payment_from).transpose()?)
    }
}

fn status_name(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Captured => "captured",
        PaymentStatus::Declined => "declined",
        PaymentStatus::Refunded => "refunded",
    }
}

fn payment_from(row: &PgRow) -> Result<Payment, sqlx::Error> {
    let status = match row.try_get::<&str, _>("status")? {
        "captured" => PaymentStatus::Captured,
        "declined" => PaymentStatus::Declined,
        "refunded" => PaymentStatus::Refunded,
        other => {
            return Err(sqlx::Error::Decode(
                format!("unknown payment status {other:?}").into(),
            ));
        }
    };
    Ok(Payment {
        id: row.try_get("id")?,
        request_id: row.try_get("request_id")?,
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        amount: shared::Money::new(
            row.try_get::<String, _>("currency_code")?,
            row.try_get("amount_minor")?,
        ),
        status,
        status_reason: row.try_get("status_reason")?,
        create_time: from_micros(row.try_get("create_us")?),
        update_time: from_micros(row.try_get("update_us")?),
    })
}

#[async_trait]
impl Store for PgStore {
    async fn charge(&self, charge: Charge) -> Result<Payment, Error> {
        if let Some(existing) = self.by_request_id(&charge.request_id).await? {
            return retried(charge, existing);
        }
        let payment = new_payment(charge.clone());
        let inserted = sqlx::query(
            "INSERT INTO payments (id, request_id, order_id, customer_id, currency_code, \
             amount_minor, status, status_reason, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
             TIMESTAMPTZ 'epoch' + $9 * INTERVAL '1 microsecond', \
             TIMESTAMPTZ 'epoch' + $9 * INTERVAL '1 microsecond')",
        )
        .bind(&payment.id)
        .bind(&payment.request_id)
        .bind(&payment.order_id)
        .bind(&payment.customer_id)
        .bind(&payment.amount.currency)
        .bind(payment.amount.minor)
        .bind(status_name(payment.status))
        .bind(&payment.status_reason)
        .bind(micros(payment.create_time))
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => outcome(payment),
            // A concurrent retry inserted first: its payment is the one.
            Err(error) if shared::db::is_unique_violation(&error) => {
                let winner = self
                    .by_request_id(&charge.request_id)
                    .await?
                    .ok_or(Error::from(error))?;
                retried(charge, winner)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn refund(&self, payment_id: &str, reason: &str) -> Result<Payment, Error> {
        let refunded = sqlx::query(&format!(
            "UPDATE payments SET status = 'refunded', status_reason = $2, \
             update_time = TIMESTAMPTZ 'epoch' + $3 * INTERVAL '1 microsecond' \
             WHERE id = $1 AND status = 'captured' RETURNING {COLUMNS}"
        ))
        .bind(payment_id)
        .bind(reason)
        .bind(micros(SystemTime::now()))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = refunded {
            return Ok(payment_from(&row)?);
        }
        let payment = self.payment(payment_id).await?;
        match payment.status {
            PaymentStatus::Refunded => Ok(payment),
            PaymentStatus::Declined | PaymentStatus::Captured => Err(Error::NotCaptured {
                id: payment_id.into(),
            }),
        }
    }

    async fn payment(&self, payment_id: &str) -> Result<Payment, Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM payments WHERE id = $1"))
            .bind(payment_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::PaymentNotFound {
                id: payment_id.into(),
            })?;
        Ok(payment_from(&row)?)
    }

    async fn payments(
        &self,
        order_id: Option<&str>,
        page: &PageRequest,
    ) -> Result<Vec<(String, Payment)>, Error> {
        let after = match &page.after {
            // A key we did not make matches nothing rather than failing.
            Some(after) => match after.parse::<i64>() {
                Ok(position) => position,
                Err(_) => return Ok(Vec::new()),
            },
            None => 0,
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments \
             WHERE position > $1 AND ($2::TEXT IS NULL OR order_id = $2) \
             ORDER BY position LIMIT $3"
        ))
        .bind(after)
        .bind(order_id)
        .bind(i64::try_from(page.size + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let position: i64 = row.try_get("position")?;
                let key = position_key(usize::try_from(position).unwrap_or(usize::MAX));
                Ok((key, payment_from(row)?))
            })
            .collect()
    }
}
