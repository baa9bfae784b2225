//! Every bound the engine enforces, in one place (TIGER_STYLE: put a limit on
//! everything). Exceeding one is a typed error, never a crash and never
//! unbounded memory.

/// Fuel given to one application call (wasmi fuel units, about one per
/// instruction). A method that needs more fails with `OutOfFuel`, identically
/// on every member.
pub const CALL_FUEL_MAX: u64 = 10_000_000;

/// Size of a compiled application blob (WebAssembly binary).
pub const APP_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Bytes of the application blob carried by one catchup chunk.
pub const APP_CHUNK_BYTES: usize = 64 * 1024;

/// Length of a method name in bytes.
pub const METHOD_NAME_BYTES_MAX: usize = 64;

/// Size of a transaction's input.
pub const INPUT_BYTES_MAX: usize = 64 * 1024;

/// Size of the value an application call returns.
pub const RETURN_BYTES_MAX: usize = 64 * 1024;

/// Size of one stored value.
pub const VALUE_BYTES_MAX: usize = 64 * 1024;

/// Distinct keys one call may write or remove.
pub const CALL_WRITES_MAX: usize = 1024;

/// Log lines one call may emit, and the bytes of one line.
pub const CALL_LOGS_MAX: usize = 64;
pub const LOG_LINE_BYTES_MAX: usize = 1024;

/// Parents one transaction may name. An author with more heads names the
/// highest ones in the canonical order; the rest are merged by later
/// transactions.
pub const TX_PARENTS_MAX: usize = 32;

/// Size of one encoded message on the wire (checked before decoding).
pub const MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Transactions in one sync batch, and their total encoded bytes.
pub const SYNC_BATCH_TXS_MAX: usize = 512;
pub const SYNC_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Ids named in one heads announcement or one fetch request.
pub const SYNC_IDS_MAX: usize = 256;

/// Stability announcements carried by one heads message: the sender's own
/// and the rest relayed (`crate::stability`).
pub const ANNOUNCEMENTS_PER_MESSAGE_MAX: usize = 4;

/// Transactions waiting for missing parents, per context.
pub const PENDING_TXS_MAX: usize = 200_000;

/// Contexts one node may host.
pub const CONTEXTS_MAX: usize = 4096;

/// Vouches (other members' signed announcements) a checkpoint offer carries.
pub const CHECKPOINT_VOUCHES_MAX: usize = 3;

/// How many members must acknowledge a leave before the leaver deletes its
/// copy (or every other member, if fewer): with two, a member that crashes
/// for good right after acknowledging never takes the last copy of what
/// the leaver held with it.
pub const LEAVE_ACKS: usize = 2;
