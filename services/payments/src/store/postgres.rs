//! [`PgStore`]: payments in PostgreSQL (`migrations/`), for when `DATABASE_URL` is set.
//!
//! `request_id` is a unique constraint: of concurrent charges under one request_id (on
//! any replica), one insert wins and claims the authorization; the others find it. A
//! claim is taken over only once it has expired (`claimed_until`, by the database's
//! clock, the one clock all replicas share).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use shared::PageRequest;
use shared::db::{from_micros, micros};
use shared::pagination::position_key;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row as _};

use crate::authorizer::Decision;
use crate::domain::{Begun, Payment, PaymentStatus, Pending, Refund, Store};
use crate::error::{Error, storage_error};

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

    /// Takes over the pending payment of `request_id` if its claim has expired.
    async fn take_over(&self, request_id: &str, claim: Duration) -> Result<Option<Pending>, Error> {
        let row = sqlx::query(&format!(
            "UPDATE payments SET claimed_until = now() + $2 * INTERVAL '1 microsecond' \
             WHERE request_id = $1 AND status = 'pending' AND claimed_until <= now() \
             RETURNING {COLUMNS}, card_token"
        ))
        .bind(request_id)
        .bind(micros_of(claim))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(pending_from).transpose()?)
    }
}

fn micros_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn pending_from(row: &PgRow) -> Result<Pending, sqlx::Error> {
    Ok(Pending {
        payment: payment_from(row)?,
        card_token: row
            .try_get::<Option<String>, _>("card_token")?
            .unwrap_or_default(),
    })
}

fn status_name(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Pending => "pending",
        PaymentStatus::Captured => "captured",
        PaymentStatus::Declined => "declined",
        PaymentStatus::Refunded => "refunded",
    }
}

fn payment_from(row: &PgRow) -> Result<Payment, sqlx::Error> {
    let status = match row.try_get::<&str, _>("status")? {
        "pending" => PaymentStatus::Pending,
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
    async fn begin(&self, pending: Pending, claim: Duration) -> Result<Begun, Error> {
        let payment = &pending.payment;
        let inserted = sqlx::query(
            "INSERT INTO payments (id, request_id, order_id, customer_id, currency_code, \
             amount_minor, status, status_reason, card_token, claimed_until, create_time, \
             update_time) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', '', $7, \
             now() + $8 * INTERVAL '1 microsecond', \
             TIMESTAMPTZ 'epoch' + $9 * INTERVAL '1 microsecond', \
             TIMESTAMPTZ 'epoch' + $9 * INTERVAL '1 microsecond') \
             ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(&payment.id)
        .bind(&payment.request_id)
        .bind(&payment.order_id)
        .bind(&payment.customer_id)
        .bind(&payment.amount.currency)
        .bind(payment.amount.minor)
        .bind(&pending.card_token)
        .bind(micros_of(claim))
        .bind(micros(payment.create_time))
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Begun::Claimed(pending));
        }
        if let Some(taken_over) = self.take_over(&payment.request_id, claim).await? {
            return Ok(Begun::Claimed(taken_over));
        }
        match self.by_request_id(&payment.request_id).await? {
            Some(found) => Ok(Begun::Found(found)),
            None => Err(storage_error(std::io::Error::other(format!(
                "payment of request_id {:?} vanished",
                payment.request_id
            )))),
        }
    }

    async fn finish(&self, payment_id: &str, decision: &Decision) -> Result<Payment, Error> {
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("SELECT status, refund_reason FROM payments WHERE id = $1 FOR UPDATE")
                .bind(payment_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| Error::PaymentNotFound {
                    id: payment_id.into(),
                })?;
        if row.try_get::<&str, _>("status")? != "pending" {
            drop(tx);
            return self.payment(payment_id).await;
        }
        let refund_reason: Option<String> = row.try_get("refund_reason")?;
        let (status, reason) = decision.end(refund_reason.as_deref());
        let row = sqlx::query(&format!(
            "UPDATE payments SET status = $2, status_reason = $3, card_token = NULL, \
             claimed_until = NULL, \
             update_time = TIMESTAMPTZ 'epoch' + $4 * INTERVAL '1 microsecond' \
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(payment_id)
        .bind(status_name(status))
        .bind(reason)
        .bind(micros(SystemTime::now()))
        .fetch_one(&mut *tx)
        .await?;
        let payment = payment_from(&row)?;
        tx.commit().await?;
        Ok(payment)
    }

    async fn release(&self, payment_id: &str) -> Result<(), Error> {
        sqlx::query(
            "UPDATE payments SET claimed_until = now() WHERE id = $1 AND status = 'pending'",
        )
        .bind(payment_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_stalled(&self, claim: Duration, limit: usize) -> Result<Vec<Pending>, Error> {
        let rows = sqlx::query(&format!(
            "UPDATE payments SET claimed_until = now() + $1 * INTERVAL '1 microsecond' \
             WHERE position IN (SELECT position FROM payments \
                 WHERE status = 'pending' AND claimed_until <= now() \
                 ORDER BY claimed_until LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}, card_token"
        ))
        .bind(micros_of(claim))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(pending_from).collect::<Result<_, _>>()?)
    }

    async fn refund(&self, payment_id: &str, reason: &str) -> Result<Payment, Error> {
        let mut tx = self.pool.begin().await?;
        let payment = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE id = $1 FOR UPDATE"
        ))
        .bind(payment_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::PaymentNotFound {
            id: payment_id.into(),
        })?;
        let payment = payment_from(&payment)?;
        let refund = payment.refund()?;
        let sql = match refund {
            Refund::Done => return Ok(payment),
            // Applied when its authorization ends (`finish`).
            Refund::Deferred => format!(
                "UPDATE payments SET refund_reason = COALESCE(refund_reason, $2) \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            Refund::Apply => format!(
                "UPDATE payments SET status = 'refunded', status_reason = $2, \
                 update_time = TIMESTAMPTZ 'epoch' + $3 * INTERVAL '1 microsecond' \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
        };
        let query = sqlx::query(&sql).bind(payment_id).bind(reason);
        let query = if refund == Refund::Apply {
            query.bind(micros(SystemTime::now()))
        } else {
            query
        };
        let row = query.fetch_one(&mut *tx).await?;
        let payment = payment_from(&row)?;
        tx.commit().await?;
        Ok(payment)
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
