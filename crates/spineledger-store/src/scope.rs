//! The clinic context of a transaction: which clinics' rows row-level security lets the
//! app role see and write in it.
//!
//! Every transaction of the app role names its clinics first, with
//! `set_config('spineledger.clinic_ids', …, true)`: the `true` makes it `SET LOCAL`, so the
//! context ends with the transaction and a pooled connection never carries one clinic's
//! context into the next request. A statement run outside such a transaction sees no
//! clinical row at all.
//!
//! Cost: a read that used to be one statement now needs a transaction around it, so
//! `BEGIN` and `COMMIT` add two round trips; the `set_config` itself travels in the same
//! round trip as the transaction's first statement ([`scoped`] pipelines them), and in
//! an append, which was a transaction already, it costs no round trip at all.

use std::future::Future;

use deadpool_postgres::Transaction;
use uuid::Uuid;

/// The setting the row-level security policies read (through the SQL function
/// `spineledger_clinic_ids()`): clinic ids separated by commas; empty or unset is none.
pub const CLINIC_SETTING: &str = "spineledger.clinic_ids";

pub(crate) const SET_SCOPE: &str = "SELECT set_config('spineledger.clinic_ids', $1, true)";

/// The clinics one transaction works for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicScope {
    setting: String,
}

impl ClinicScope {
    /// One clinic: every write, and every read of one clinic's records.
    pub fn one(clinic: Uuid) -> Self {
        Self::of(&[clinic])
    }

    /// Several clinics (statistics across clinics). No clinic: the transaction sees
    /// nothing.
    pub fn of(clinics: &[Uuid]) -> Self {
        let setting = clinics
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Self { setting }
    }

    /// The value [`CLINIC_SETTING`] takes.
    pub fn setting(&self) -> &str {
        &self.setting
    }
}

/// Sets `scope` in `transaction`, then runs `first`, the transaction's first statement
/// (or any future of statements on it), pipelined: the `set_config` is sent before
/// `first` is polled at all, so the server runs it first, and both travel in one round
/// trip. Later statements of the transaction see the same clinics.
///
/// `first` must not have been polled yet (an `async fn` call or `async` block that has
/// not been awaited): its statements must leave after the setting.
///
/// # Errors
/// The setting's failure or `first`'s.
pub async fn scoped<T, E>(
    transaction: &Transaction<'_>,
    scope: &ClinicScope,
    first: impl Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: From<tokio_postgres::Error>,
{
    // Prepared once per connection (cached), so that sending it needs no round trip of
    // its own: `execute` on a prepared statement writes the request on its first poll.
    let set = transaction.prepare_cached(SET_SCOPE).await?;
    let setting = async {
        transaction
            .execute(&set, &[&scope.setting])
            .await
            .map_err(E::from)
    };
    let (_, value) = futures::try_join!(setting, first)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_lists_its_clinics_and_no_clinic_is_an_empty_setting() {
        let a = Uuid::from_u128(0xa);
        let b = Uuid::from_u128(0xb);
        assert_eq!(ClinicScope::of(&[]).setting(), "");
        assert_eq!(ClinicScope::one(a).setting(), a.to_string());
        assert_eq!(ClinicScope::of(&[a, b]).setting(), format!("{a},{b}"));
    }
}
