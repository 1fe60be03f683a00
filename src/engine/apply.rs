//! The command logic: one [`Command`] applied inside a shard's write transaction, checked against the state the
//! commands before it left. A pure function of (transaction, command): the same code serves every batch of every
//! shard, and its outcome ([`Change`]) is what the log records and the cache takes.

use bytes::Bytes;
use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use crate::command::{parse_i64_strict, Command, Reply, SetCond, Space, NOT_AN_INTEGER};
use crate::engine::change::{Change, Outcome};
use crate::engine::requests::{self, Entry, Lookup};
use crate::engine::schema::{table, TABLE_REQUESTS, TABLE_REQUEST_TIMES};
use crate::error::Error;
use crate::record::{counter_of, Record, RecordView};

/// What `f` reads from the record stored under `key` (None when absent), parsed in place on the page without
/// copying it. `Ok(Err(..))` = a damaged record (the command fails alone); `Err` = a storage failure.
fn current<T>(
    t: &redb::Table<&[u8], &[u8]>,
    key: &[u8],
    f: impl FnOnce(RecordView<'_>) -> T,
) -> Result<Result<Option<T>, Error>, redb::Error> {
    let Some(guard) = t.get(key)? else { return Ok(Ok(None)) };
    Ok(match RecordView::parse(guard.value()) {
        Ok(v) => Ok(Some(f(v))),
        Err(e) => Err(Error::Internal(format!("damaged record: {e}"))),
    })
}

/// Unwraps a [`current`] read inside [`apply_one`], returning the command's own failure for a damaged record.
macro_rules! read_current {
    ($read:expr) => {
        match $read? {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        }
    };
}

/// The tables of one write transaction, each opened at most once per batch: opening (and closing, which writes
/// the table's root back into the transaction) once per command cost a few percent of a write's CPU.
pub struct Tables<'t> {
    txn: &'t WriteTransaction,
    open: [Option<redb::Table<'t, &'static [u8], &'static [u8]>>; Space::ALL.len()],
    requests: Option<(RequestsById<'t>, RequestsByTime<'t>)>,
}

/// The recorded outcomes of idempotent writes by request id (see [`crate::engine::requests`]).
pub(crate) type RequestsById<'t> = redb::Table<'t, u128, &'static [u8]>;
/// The same records by (`at_ms`, request id), oldest first.
pub(crate) type RequestsByTime<'t> = redb::Table<'t, (u64, u128), ()>;

impl<'t> Tables<'t> {
    pub fn new(txn: &'t WriteTransaction) -> Tables<'t> {
        Tables { txn, open: Default::default(), requests: None }
    }

    /// The open tables of recorded requests: by id, and by time.
    pub(crate) fn requests(&mut self) -> Result<(&mut RequestsById<'t>, &mut RequestsByTime<'t>), redb::Error> {
        if self.requests.is_none() {
            self.requests = Some((self.txn.open_table(TABLE_REQUESTS)?, self.txn.open_table(TABLE_REQUEST_TIMES)?));
        }
        let (by_id, by_time) = self.requests.as_mut().expect("opened above");
        Ok((by_id, by_time))
    }

    /// The open table of `space`.
    fn get(&mut self, space: Space) -> Result<&mut redb::Table<'t, &'static [u8], &'static [u8]>, redb::Error> {
        let slot = &mut self.open[space as usize];
        if slot.is_none() {
            *slot = Some(self.txn.open_table(table(space))?);
        }
        Ok(slot.as_mut().expect("opened above"))
    }
}

/// Applies one command inside the batch's transaction. `Ok(Err(..))` is the command's own failure
/// (precondition, overflow); `Err` is a storage failure that dooms the whole transaction.
pub fn apply_one(tables: &mut Tables<'_>, cmd: &Command, rev: &mut u64) -> Result<Outcome, redb::Error> {
    let mut take_rev = || {
        let r = *rev;
        *rev += 1;
        r
    };
    match cmd {
        Command::Put { space, key, value, content_type, precondition, skip_if_unchanged } => {
            let t = tables.get(*space)?;
            // An unconditional put reads nothing first: the insert says whether it replaced a record (one B-tree
            // descent instead of two).
            let current = if precondition.is_none() && !skip_if_unchanged {
                None
            } else {
                read_current!(current(t, key, |v| {
                    (v.rev, *skip_if_unchanged && v.content_type == &content_type[..] && v.value == &value[..])
                }))
            };
            if !precondition.holds(current.map(|(rev, _)| rev)) {
                return Ok(Err(precondition.failure()));
            }
            if let Some((rev, true)) = current {
                return Ok(Ok((Reply::Unchanged { rev }, Change::None)));
            }
            let r = take_rev();
            let rec = Record::encode(r, content_type, value);
            let replaced = t.insert(&key[..], rec.as_bytes())?.is_some();
            let reply = Reply::Stored { created: !replaced, rev: r };
            Ok(Ok((reply, Change::Put(*space, key.clone(), rec))))
        }
        Command::Delete { space, key, precondition } => {
            let t = tables.get(*space)?;
            let current = read_current!(current(t, key, |v| v.rev));
            if !precondition.holds(current) {
                return Ok(Err(precondition.failure()));
            }
            if current.is_none() {
                return Ok(Err(Error::NotFound("key not found".into())));
            }
            t.remove(&key[..])?;
            Ok(Ok((Reply::Deleted, Change::Remove(*space, key.clone()))))
        }
        Command::CounterAdd { name, delta } => {
            let t = tables.get(Space::Counter)?;
            let current = match read_current!(current(t, name, |v| counter_of(v.value))) {
                None => 0,
                Some(Some(n)) => n,
                Some(None) => return Ok(Err(Error::Internal("damaged counter record".into()))),
            };
            let Some(sum) = current.checked_add(*delta) else {
                return Ok(Err(Error::BadRequest(format!(
                    "adding {delta} to {current} overflows a 64-bit signed integer; the counter is unchanged"
                ))));
            };
            let rec = Record::encode(take_rev(), b"", &sum.to_le_bytes());
            t.insert(&name[..], rec.as_bytes())?;
            Ok(Ok((Reply::Counter(sum), Change::Put(Space::Counter, name.clone(), rec))))
        }
        Command::Set { key, value, cond, get_old } => {
            let t = tables.get(Space::Kv)?;
            // A plain SET reads nothing first (see `Put`).
            let read = if *cond == SetCond::Always && !get_old {
                None
            } else {
                read_current!(current(t, key, |v| get_old.then(|| Bytes::copy_from_slice(v.value))))
            };
            let (exists, old) = match read {
                None => (false, None),
                Some(old) => (true, old),
            };
            if !cond.holds(exists) {
                return Ok(Ok((Reply::Set { written: false, old }, Change::None)));
            }
            let rec = Record::encode(take_rev(), b"", value);
            t.insert(&key[..], rec.as_bytes())?;
            Ok(Ok((Reply::Set { written: true, old }, Change::Put(Space::Kv, key.clone(), rec))))
        }
        Command::KvIncr { key, delta } => {
            let t = tables.get(Space::Kv)?;
            let current = match read_current!(current(t, key, |v| parse_i64_strict(v.value))) {
                None => 0,
                Some(Some(n)) => n,
                Some(None) => return Ok(Err(Error::BadRequest(NOT_AN_INTEGER.into()))),
            };
            let Some(sum) = current.checked_add(*delta) else {
                return Ok(Err(Error::BadRequest("increment or decrement would overflow".into())));
            };
            let rec = Record::encode(take_rev(), b"", sum.to_string().as_bytes());
            t.insert(&key[..], rec.as_bytes())?;
            Ok(Ok((Reply::Counter(sum), Change::Put(Space::Kv, key.clone(), rec))))
        }
        Command::Read { space, key } => {
            let t = tables.get(*space)?;
            let rec = read_current!(current(t, key, |v| Record::encode(v.rev, v.content_type, v.value)));
            let effect = match &rec {
                Some(r) => Change::Found(*space, key.clone(), r.clone()),
                None => Change::None,
            };
            Ok(Ok((Reply::Value(rec), effect)))
        }
        Command::Batch(cmds) => {
            let mut replies = Vec::with_capacity(cmds.len());
            let mut effects = Vec::with_capacity(cmds.len());
            for c in cmds {
                match apply_one(tables, c, rev)? {
                    Ok((reply, effect)) => {
                        replies.push(Ok(reply));
                        effects.push(effect);
                    }
                    Err(e) => replies.push(Err(e)),
                }
            }
            Ok(Ok((Reply::Batch(replies), Change::Many(effects))))
        }
        Command::Clear { space } => {
            let t = tables.get(*space)?;
            let removed = t.len()?;
            if removed == 0 {
                return Ok(Ok((Reply::Cleared(0), Change::None)));
            }
            t.retain(|_, _| false)?;
            // A revision marks the commit, so a failed-but-landed commit is recognised (see `commit_landed`).
            take_rev();
            Ok(Ok((Reply::Cleared(removed), Change::Clear(*space))))
        }
        Command::Idempotent { request, at_ms, command } => {
            let expired = match requests::lookup(tables, *request, *at_ms)? {
                Ok(Lookup::Live(Entry { key, outcome, .. })) => {
                    let reply = Reply::Idempotent { key, outcome: Box::new(outcome), replayed: true };
                    return Ok(Ok((reply, Change::None)));
                }
                Ok(Lookup::Expired(recorded_ms)) => Some(recorded_ms),
                Ok(Lookup::Absent) => None,
                Err(e) => return Ok(Err(e)),
            };
            let (outcome, change) = match apply_one(tables, command, rev)? {
                Ok((reply, change)) => (Ok(reply), change),
                Err(e) => (Err(e), Change::None),
            };
            let entry = Entry { at_ms: *at_ms, key: Bytes::copy_from_slice(command.key()), outcome };
            let mut changes = vec![change];
            requests::remember(tables, *request, &entry, expired, &mut changes)?;
            let reply = Reply::Idempotent { key: entry.key, outcome: Box::new(entry.outcome), replayed: false };
            Ok(Ok((reply, Change::Many(changes))))
        }
    }
}
