//! Money as integer minor units in one currency: sums and refunds stay exact.
//!
//! The contracts' `common.v1.Money` carries the same two fields (`currency_code`,
//! `amount_minor`); the services convert at their edge, so this runtime needs no
//! generated type.

use std::fmt;

use crate::validation::Violations;

/// An amount in minor units (cents) of an ISO 4217 currency.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    pub currency: String,
    pub minor: i64,
}

/// The largest amount accepted anywhere: 10 billion major units.
pub const MAX_MINOR: i64 = 1_000_000_000_000;

impl Money {
    pub fn new(currency: impl Into<String>, minor: i64) -> Self {
        Self {
            currency: currency.into(),
            minor,
        }
    }

    /// Validates a request's money field named `field`, given as its
    /// `(currency_code, amount_minor)` (`None` when the field is absent): a currency of
    /// three upper-case letters and an amount from 1 to [`MAX_MINOR`].
    pub fn parse(
        field: &str,
        money: Option<(&str, i64)>,
        violations: &mut Violations,
    ) -> Option<Self> {
        let Some((currency_code, amount_minor)) = money else {
            violations.add(field, "is required");
            return None;
        };
        let currency_ok =
            currency_code.len() == 3 && currency_code.bytes().all(|b| b.is_ascii_uppercase());
        violations.check(
            currency_ok,
            format!("{field}.currency_code"),
            "must be an ISO 4217 code like USD",
        );
        let amount_ok = (1..=MAX_MINOR).contains(&amount_minor);
        violations.check(
            amount_ok,
            format!("{field}.amount_minor"),
            format!("must be from 1 to {MAX_MINOR}"),
        );
        (currency_ok && amount_ok).then(|| Self::new(currency_code, amount_minor))
    }

    /// `self × quantity`, `None` on overflow.
    pub fn times(&self, quantity: i64) -> Option<Self> {
        Some(Self::new(&self.currency, self.minor.checked_mul(quantity)?))
    }

    /// `self + other`, `None` on overflow or a currency mismatch.
    pub fn plus(&self, other: &Self) -> Option<Self> {
        (self.currency == other.currency)
            .then(|| self.minor.checked_add(other.minor))
            .flatten()
            .map(|minor| Self::new(&self.currency, minor))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}.{:02}",
            self.currency,
            self.minor / 100,
            (self.minor % 100).abs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(currency: &str, minor: i64) -> Result<Money, Vec<String>> {
        let mut v = Violations::new();
        let money = Money::parse("amount", Some((currency, minor)), &mut v);
        match v.finish() {
            Ok(()) => Ok(money.unwrap()),
            Err(e) => Err(e.violations.into_iter().map(|v| v.field).collect()),
        }
    }

    #[test]
    fn validates_currency_and_amount() {
        assert_eq!(parse("USD", 1999), Ok(Money::new("USD", 1999)));
        assert_eq!(parse("usd", 1), Err(vec!["amount.currency_code".into()]));
        assert_eq!(
            parse("EURO", 0),
            Err(vec![
                "amount.currency_code".into(),
                "amount.amount_minor".into()
            ])
        );
        assert_eq!(
            parse("USD", MAX_MINOR + 1),
            Err(vec!["amount.amount_minor".into()])
        );
        let mut v = Violations::new();
        assert_eq!(Money::parse("amount", None, &mut v), None);
        assert_eq!(v.finish().unwrap_err().violations[0].field, "amount");
    }

    #[test]
    fn arithmetic_is_checked() {
        let price = Money::new("USD", 1999);
        assert_eq!(price.times(3), Some(Money::new("USD", 5997)));
        assert_eq!(price.times(i64::MAX), None);
        assert_eq!(price.plus(&Money::new("EUR", 1)), None);
        assert_eq!(price.to_string(), "USD 19.99");
    }
}
