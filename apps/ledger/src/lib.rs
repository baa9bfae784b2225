//! ledger: a bank whose invariant can be checked, the correct twin of
//! `apps/mint-bug` (the app `ctx-sim fuzz --app` must find no fault in).
//!
//! Owns: the total supply (`supply`, the sum of every amount opened) and
//! the list of opened accounts (`accounts`), beside each account's
//! balance, so that "total money is conserved" is a view of the state
//! alone: [`Ledger::conserved`], an `#[invariant]`, sums the balances of
//! the listed accounts and compares with the supply. `open` adds to both;
//! `transfer` moves money or fails with no effect. (The bundled bank
//! keeps balances only, with no list to sum, so it has no such view: the
//! host store cannot be iterated.)

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
    /// is missing or `from` holds less. To oneself: nothing changes.
    pub fn transfer(&mut self, from: Key, to: Key, amount: u64) -> Result<(), String> {
        let from_balance = self.balances.get(&from).ok_or("no such account: from")?;
        let to_balance = self.balances.get(&to).ok_or("no such account: to")?;
        if from_balance < amount {
            return Err("insufficient funds".into());
        }
        if from == to {
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
    use ctx_sdk::App;
    use ctx_sdk::native::Harness;

    #[test]
    fn transfers_keep_the_invariant() {
        let mut ledger = Harness::native::<Ledger>();
        ledger
            .call("open", &[b"a".as_slice(), &10u64.to_le_bytes()])
            .expect("open");
        ledger
            .call("open", &[b"b".as_slice(), &5u64.to_le_bytes()])
            .expect("open");
        for (from, to, amount) in [(b"a", b"b", 3u64), (b"b", b"b", 8), (b"a", b"a", 7)] {
            ledger
                .call("transfer", &[from.as_slice(), to, &amount.to_le_bytes()])
                .expect("transfer");
        }
        let no_args: &[&[u8]] = &[];
        assert_eq!(ledger.view("conserved", no_args), Ok(Vec::new()));
        let abi = Ledger::ABI.method("conserved").expect("declared");
        assert!(abi.invariant);
    }
}
