//! bank, the bundled app of accounts holding u64 balances
//! (`scenarios/apps/bank.wat`), written with ctx-sdk.
//!
//! Owns the same state layout as the WebAssembly-text version, which
//! `apps/conformance` checks on every bundled scenario: an account is a
//! key of at most 32 bytes, stored zero-padded to 32, and its balance is 8
//! bytes little-endian. A transfer moves money or fails with no effect, so
//! the total is conserved.

use std::fmt;

use ctx_sdk::{Key, Le, Map};

#[ctx_sdk::state]
pub struct Bank {
    #[prefix = ""]
    balances: Map<Key, u64, Le>,
}

/// Why a bank call fails (the messages of `bank.wat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankError {
    AccountExists,
    NoSuchAccount,
    NoSuchFrom,
    NoSuchTo,
    InsufficientFunds,
    BalanceOverflow,
}

impl fmt::Display for BankError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BankError::AccountExists => "account already exists",
            BankError::NoSuchAccount => "no such account",
            BankError::NoSuchFrom => "no such account: from",
            BankError::NoSuchTo => "no such account: to",
            BankError::InsufficientFunds => "insufficient funds",
            BankError::BalanceOverflow => "balance overflow",
        })
    }
}

#[ctx_sdk::app]
impl Bank {
    /// Creates `account` holding `amount`; fails if it exists.
    pub fn open(&mut self, account: Key, amount: u64) -> Result<(), BankError> {
        if self.balances.contains(&account) {
            return Err(BankError::AccountExists);
        }
        self.balances.insert(&account, &amount);
        Ok(())
    }

    /// Moves `amount` from `from` to `to`; fails, with no effect, if either
    /// account is missing or `from` holds less. To oneself, the same checks
    /// pass and nothing changes.
    pub fn transfer(&mut self, from: Key, to: Key, amount: u64) -> Result<(), BankError> {
        let from_balance = self.balances.get(&from).ok_or(BankError::NoSuchFrom)?;
        let to_balance = self.balances.get(&to).ok_or(BankError::NoSuchTo)?;
        if from_balance < amount {
            return Err(BankError::InsufficientFunds);
        }
        if from == to {
            return Ok(());
        }
        let to_after = to_balance
            .checked_add(amount)
            .ok_or(BankError::BalanceOverflow)?;
        self.balances.insert(&from, &(from_balance - amount));
        self.balances.insert(&to, &to_after);
        Ok(())
    }

    /// The balance of `account`; fails if it does not exist.
    pub fn balance(&self, account: Key) -> Result<u64, BankError> {
        self.balances.get(&account).ok_or(BankError::NoSuchAccount)
    }

    /// Loops forever: compiled, a call to it always runs out of fuel.
    pub fn spin(&self) {
        loop {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctx_sdk::native::{CallError, Harness};

    fn key(name: &str) -> Key {
        Key::new(name.as_bytes()).expect("a short name")
    }

    #[test]
    fn transfers_conserve_money() {
        let mut bank = Harness::native::<Bank>();
        bank.call("open", &[b"alice".as_slice(), &100u64.to_le_bytes()])
            .expect("open");
        bank.invoke(|bank: &mut Bank| bank.open(key("bob"), 5))
            .expect("runs")
            .expect("opens");
        assert_eq!(
            bank.invoke(|bank: &mut Bank| bank.open(key("bob"), 5)),
            Ok(Err(BankError::AccountExists))
        );
        bank.call(
            "transfer",
            &[b"alice".as_slice(), b"bob", &30u64.to_le_bytes()],
        )
        .expect("transfer");
        let root = bank.root();
        assert_eq!(
            bank.call(
                "transfer",
                &[b"bob".as_slice(), b"alice", &36u64.to_le_bytes()]
            ),
            Err(CallError::AppFailed("insufficient funds".into()))
        );
        assert_eq!(
            bank.call(
                "transfer",
                &[b"bob".as_slice(), b"carol", &1u64.to_le_bytes()]
            ),
            Err(CallError::AppFailed("no such account: to".into()))
        );
        bank.call(
            "transfer",
            &[b"bob".as_slice(), b"bob", &35u64.to_le_bytes()],
        )
        .expect("to oneself");
        assert_eq!(bank.root(), root);
        let total = bank
            .inspect(|bank: &Bank| {
                bank.balance(key("alice")).unwrap() + bank.balance(key("bob")).unwrap()
            })
            .expect("reads");
        assert_eq!(total, 105);
        assert_eq!(
            bank.view("balance", &[b"bob"]),
            Ok(35u64.to_le_bytes().to_vec())
        );
        assert_eq!(
            bank.view("balance", &[b"carol"]),
            Err(CallError::AppFailed("no such account".into()))
        );
    }
}
