;; kv: a key-value store, the simplest application.
;;
;;   set(key, value)   stores value under key
;;   remove(key)       removes key (no error if it is absent)
;;   get(key)          returns the value, or an empty return value if absent;
;;                     read-only
;;   spin()            loops forever (tests the fuel limit)
;;
;; Keys are at most 32 bytes and are stored zero-padded to 32. The input
;; encoding and the host functions are described in docs/ABI.md.
;;
;; Memory layout:
;;   0..32       the key, zero-padded
;;   256..640    error messages
;;   1024..      the input, then (for get) the value read from storage
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

  ;; ---- methods ----

  (func (export "set")
    (local $value i32)
    (local $value_len i32)
    (call $read_input)
    (call $next_key (i32.const 0))
    (call $next_arg)
    (local.set $value_len)
    (local.set $value)
    (call $no_more_args)
    (call $storage_write (i32.const 0) (local.get $value) (local.get $value_len)))

  (func (export "remove")
    (call $read_input)
    (call $next_key (i32.const 0))
    (call $no_more_args)
    (drop (call $storage_remove (i32.const 0))))

  (func (export "get")
    (local $buf i32)
    (local $cap i32)
    (local $len i32)
    (call $read_input)
    (call $next_key (i32.const 0))
    (call $no_more_args)
    ;; Read the value into the rest of the memory, after the input.
    (local.set $buf (global.get $end))
    (local.set $cap (i32.sub (i32.mul (memory.size) (i32.const 65536)) (local.get $buf)))
    (local.set $len (call $storage_read (i32.const 0) (local.get $buf) (local.get $cap)))
    ;; Absent: return nothing.
    (if (i32.eq (local.get $len) (i32.const -1))
      (then (return)))
    ;; Larger than the room left: grow the memory and read it again.
    (if (i32.gt_u (local.get $len) (local.get $cap))
      (then
        (call $ensure (i32.add (local.get $buf) (local.get $len)))
        (drop (call $storage_read (i32.const 0) (local.get $buf) (local.get $len)))))
    (call $value_return (local.get $buf) (local.get $len)))
)
