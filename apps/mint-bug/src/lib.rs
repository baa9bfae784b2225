//! mint-bug: the ledger app (`apps/ledger`) with a bug planted on one
//! path, for `ctx-sim fuzz --app` to find (`sim/tests/app_fuzz.rs`): a
//! transfer to oneself credits the amount without debiting it, so money is
//! minted and its `#[invariant]` [`Ledger::conserved`] (the balances of the
//! opened accounts add up to the supply) fails on every member that
//! applies it. Everything else is the ledger's: the same state, the same
//! checks.

use ctx_sdk::{Cell, Counter, Key, Le, Map};

#[ctx_sdk::state]
pub struct Ledger {
    #[prefix = "b:"]
    balances: Map<Key, u64, Le>,
    #[prefix = "accounts"]
    accounts: Cell<Vec<Key>>,
    #[prefix = "supply"]
    supply: Counter,
}

#[ctx_sdk::app]
impl Ledger {
    /// Creates `account` holding `amount`; fails if it exists or if the
    /// supply would pass `u64::MAX`.
    pub fn open(&mut self, account: Key, amount: u64) -> Result<(), String> {
        if self.balances.contains(&account) {
            return Err("account already exists".into());
        }
        self.supply
            .add(amount)
            .map_err(|_| "the supply would overflow".to_owned())?;
        let mut accounts = self.accounts.get().unwrap_or_default();
        accounts.push(account);
        self.accounts.set(&accounts);
        self.balances.insert(&account, &amount);
        Ok(())
    }

    /// Moves `amount` from `from` to `to`; fails, with no effect, if either
    /// is missing or `from` holds less. To oneself: mints `amount` (the bug).
    pub fn transfer(&mut self, from: Key, to: Key, amount: u64) -> Result<(), String> {
        let from_balance = self.balances.get(&from).ok_or("no such account: from")?;
        let to_balance = self.balances.get(&to).ok_or("no such account: to")?;
        if from_balance < amount {
            return Err("insufficient funds".into());
        }
        if from == to {
            // THE PLANTED BUG: credits without debiting (the ledger
            // returns here with nothing changed).
            let minted = to_balance.checked_add(amount).ok_or("balance overflow")?;
            self.balances.insert(&to, &minted);
            return Ok(());
        }
        let to_after = to_balance.checked_add(amount).ok_or("balance overflow")?;
        self.balances.insert(&from, &(from_balance - amount));
        self.balances.insert(&to, &to_after);
        Ok(())
    }

    /// The balance of `account`; fails if it does not exist.
    pub fn balance(&self, account: Key) -> Result<u64, String> {
        self.balances
            .get(&account)
            .ok_or_else(|| "no such account".to_owned())
    }

    /// Total money is conserved: the balances of the opened accounts add
    /// up to the supply.
    #[invariant]
    pub fn conserved(&self) -> Result<(), String> {
        let accounts = self.accounts.get().unwrap_or_default();
        let total: u128 = accounts
            .iter()
            .map(|account| u128::from(self.balances.get(account).unwrap_or(0)))
            .sum();
        let supply = self.supply.get();
        if total == u128::from(supply) {
            Ok(())
        } else {
            Err(format!(
                "the {} accounts hold {total} in all, but {supply} was opened",
                accounts.len()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctx_sdk::native::{CallError, Harness};

    #[test]
    fn a_transfer_to_oneself_breaks_the_invariant() {
        let mut ledger = Harness::native::<Ledger>();
        ledger
            .call("open", &[b"a".as_slice(), &10u64.to_le_bytes()])
            .expect("open");
        let no_args: &[&[u8]] = &[];
        assert_eq!(ledger.view("conserved", no_args), Ok(Vec::new()));
        ledger
            .call("transfer", &[b"a".as_slice(), b"a", &4u64.to_le_bytes()])
            .expect("transfer");
        assert_eq!(
            ledger.view("conserved", no_args),
            Err(CallError::AppFailed(
                "the 1 accounts hold 14 in all, but 10 was opened".into()
            ))
        );
    }
}
