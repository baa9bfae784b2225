;; bank: accounts holding u64 balances; transfers conserve the total.
;;
;;   open(account, amount)      creates account with balance amount (u64,
;;                              8 bytes little-endian); fails if it exists
;;   transfer(from, to, amount) moves amount from one account to another;
;;                              fails, with no effect, if either account does
;;                              not exist or from holds less than amount.
;;                              from == to passes the same checks and changes
;;                              nothing
;;   balance(account)           returns the balance, 8 bytes little-endian;
;;                              fails if the account does not exist; read-only
;;   spin()                     loops forever (tests the fuel limit)
;;
;; Accounts are keys: at most 32 bytes, stored zero-padded to 32; a balance is
;; stored as 8 bytes little-endian. The input encoding and the host functions
;; are described in docs/ABI.md.
;;
;; Memory layout:
;;   0..32       the first account (open, balance; transfer's from)
;;   32..64      transfer's to
;;   64..72      the balance being read or written
;;   256..1024   error messages
;;   1024..      the input
(module
  ;; ---- host functions (docs/ABI.md) ----
  (import "env" "input_len"      (func $input_len (result i32)))
  (import "env" "input_read"     (func $input_read (param i32)))
  (import "env" "storage_read"   (func $storage_read (param i32 i32 i32) (result i32)))
  (import "env" "storage_write"  (func $storage_write (param i32 i32 i32)))
  (import "env" "storage_remove" (func $storage_remove (param i32) (result i32)))
  (import "env" "value_return"   (func $value_return (param i32 i32)))
  (import "env" "fail"           (func $fail (param i32 i32)))

  ;; Every call starts from this initial memory and these initial globals:
  ;; nothing survives a call except what it writes to storage.
  (memory (export "memory") 1)
  (global $cursor (mut i32) (i32.const 0)) ;; next unread byte of the input
  (global $end (mut i32) (i32.const 0))    ;; one past the last byte of the input

  ;; Error messages, zero-terminated, one per 64 bytes from 256.
  (data (i32.const 256) "missing argument")
  (data (i32.const 320) "argument runs past the end of the input")
  (data (i32.const 384) "too many arguments")
  (data (i32.const 448) "key longer than 32 bytes")
  (data (i32.const 512) "amount must be 8 bytes (u64 little-endian)")
  (data (i32.const 576) "out of memory")

  ;; Aborts the call (no effect) with the zero-terminated message at $msg.
  (func $abort (param $msg i32)
    (local $len i32)
    (block $done
      (loop $scan
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $msg) (local.get $len)))))
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (br $scan)))
    (call $fail (local.get $msg) (local.get $len))
    unreachable)

  ;; Makes sure memory[0..$end) exists, growing the memory if it must.
  (func $ensure (param $end i32)
    (local $have i32)
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow
                (i32.div_u
                  (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535))
                  (i32.const 65536)))
              (i32.const -1))
          (then (call $abort (i32.const 576))))))) ;; "out of memory"

  ;; Copies the input to memory[1024..] and starts reading its arguments.
  (func $read_input
    (local $len i32)
    (local.set $len (call $input_len))
    (call $ensure (i32.add (i32.const 1024) (local.get $len)))
    (call $input_read (i32.const 1024))
    (global.set $cursor (i32.const 1024))
    (global.set $end (i32.add (i32.const 1024) (local.get $len))))

  ;; The next argument: its address and its length. An argument is a 4-byte
  ;; little-endian length followed by that many bytes.
  (func $next_arg (result i32 i32)
    (local $ptr i32)
    (local $len i32)
    (if (i32.lt_u (i32.sub (global.get $end) (global.get $cursor)) (i32.const 4))
      (then (call $abort (i32.const 256)))) ;; "missing argument"
    (local.set $len (i32.load (global.get $cursor)))
    (local.set $ptr (i32.add (global.get $cursor) (i32.const 4)))
    (if (i32.gt_u (local.get $len) (i32.sub (global.get $end) (local.get $ptr)))
      (then (call $abort (i32.const 320)))) ;; "argument runs past the end of the input"
    (global.set $cursor (i32.add (local.get $ptr) (local.get $len)))
    (local.get $ptr)
    (local.get $len))

  ;; Fails unless every argument was read.
  (func $no_more_args
    (if (i32.ne (global.get $cursor) (global.get $end))
      (then (call $abort (i32.const 384))))) ;; "too many arguments"

  ;; Reads the next argument as a key: at most 32 bytes, stored zero-padded
  ;; to 32 bytes at memory[$dst..$dst+32).
  (func $next_key (param $dst i32)
    (local $ptr i32)
    (local $len i32)
    (call $next_arg)
    (local.set $len)
    (local.set $ptr)
    (if (i32.gt_u (local.get $len) (i32.const 32))
      (then (call $abort (i32.const 448)))) ;; "key longer than 32 bytes"
    (memory.fill (local.get $dst) (i32.const 0) (i32.const 32))
    (memory.copy (local.get $dst) (local.get $ptr) (local.get $len)))

  ;; Reads the next argument as an amount: exactly 8 bytes, u64 little-endian.
  (func $next_u64 (result i64)
    (local $ptr i32)
    (local $len i32)
    (call $next_arg)
    (local.set $len)
    (local.set $ptr)
    (if (i32.ne (local.get $len) (i32.const 8))
      (then (call $abort (i32.const 512)))) ;; "amount must be 8 bytes (u64 little-endian)"
    (i64.load (local.get $ptr)))

  ;; Loops forever: a call to it always runs out of fuel.
  (func (export "spin")
    (loop $forever (br $forever)))

  (data (i32.const 640) "account already exists")
  (data (i32.const 704) "no such account")
  (data (i32.const 768) "no such account: from")
  (data (i32.const 832) "no such account: to")
  (data (i32.const 896) "insufficient funds")
  (data (i32.const 960) "balance overflow")
  ;; (a stored balance that is not 8 bytes cannot happen: only this app writes)

  ;; The balance of the account whose key is at $key; fails with the message
  ;; at $missing if the account does not exist.
  (func $balance_of (param $key i32) (param $missing i32) (result i64)
    (if (i32.ne (call $storage_read (local.get $key) (i32.const 64) (i32.const 8)) (i32.const 8))
      (then (call $abort (local.get $missing))))
    (i64.load (i32.const 64)))

  (func $store_balance (param $key i32) (param $balance i64)
    (i64.store (i32.const 64) (local.get $balance))
    (call $storage_write (local.get $key) (i32.const 64) (i32.const 8)))

  ;; 1 if the two accounts at memory[0..32) and memory[32..64) are the same.
  (func $same_account (result i32)
    (i32.and
      (i32.and
        (i64.eq (i64.load (i32.const 0)) (i64.load (i32.const 32)))
        (i64.eq (i64.load (i32.const 8)) (i64.load (i32.const 40))))
      (i32.and
        (i64.eq (i64.load (i32.const 16)) (i64.load (i32.const 48)))
        (i64.eq (i64.load (i32.const 24)) (i64.load (i32.const 56))))))

  ;; ---- methods ----

  (func (export "open")
    (local $amount i64)
    (call $read_input)
    (call $next_key (i32.const 0))
    (local.set $amount (call $next_u64))
    (call $no_more_args)
    ;; A read with no room returns the length, or -1 if absent.
    (if (i32.ne (call $storage_read (i32.const 0) (i32.const 64) (i32.const 0)) (i32.const -1))
      (then (call $abort (i32.const 640)))) ;; "account already exists"
    (call $store_balance (i32.const 0) (local.get $amount)))

  (func (export "transfer")
    (local $amount i64)
    (local $from i64)
    (local $to i64)
    (call $read_input)
    (call $next_key (i32.const 0))
    (call $next_key (i32.const 32))
    (local.set $amount (call $next_u64))
    (call $no_more_args)
    (local.set $from (call $balance_of (i32.const 0) (i32.const 768)))  ;; "no such account: from"
    (local.set $to (call $balance_of (i32.const 32) (i32.const 832)))   ;; "no such account: to"
    (if (i64.lt_u (local.get $from) (local.get $amount))
      (then (call $abort (i32.const 896)))) ;; "insufficient funds"
    ;; To oneself: the checks above hold and nothing changes.
    (if (call $same_account)
      (then (return)))
    (if (i64.lt_u (i64.add (local.get $to) (local.get $amount)) (local.get $to))
      (then (call $abort (i32.const 960)))) ;; "balance overflow"
    (call $store_balance (i32.const 0) (i64.sub (local.get $from) (local.get $amount)))
    (call $store_balance (i32.const 32) (i64.add (local.get $to) (local.get $amount))))

  (func (export "balance")
    (call $read_input)
    (call $next_key (i32.const 0))
    (call $no_more_args)
    (drop (call $balance_of (i32.const 0) (i32.const 704))) ;; "no such account"
    (call $value_return (i32.const 64) (i32.const 8)))
)
