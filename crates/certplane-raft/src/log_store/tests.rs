//! Tests of the RocksDB log store: format, ordering and durability of completions, recovery.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use certplane_core::{Command, Principal, Proposal, Timestamp};
use openraft::storage::RaftLogStorageExt;
use openraft::testing::log_id;
use openraft::type_config::TypeConfigExt;
use tokio::sync::oneshot;

use super::*;
use crate::db::open_db;

/// Long enough never to fire on a healthy machine; only there so a broken test fails, not hangs.
const WAIT: Duration = Duration::from_secs(10);

fn blank(term: u64, index: u64) -> Entry {
    Entry::new_blank(log_id::<TypeConfig>(term, 1, index))
}

fn normal(term: u64, index: u64) -> Entry {
    Entry::new_normal(
        log_id::<TypeConfig>(term, 1, index),
        Proposal::new(
            Timestamp::from_millis(1),
            Principal::bootstrap(),
            Command::Noop,
        ),
    )
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index()).collect()
}

fn open_store() -> (tempfile::TempDir, RocksLogStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksLogStore::new(open_db(dir.path()).unwrap()).unwrap();
    (dir, store)
}

/// An append whose completion the test observes.
fn signalled() -> (IOFlushed<TypeConfig>, oneshot::Receiver<io::Result<()>>) {
    let (tx, rx) = TypeConfig::oneshot();
    (IOFlushed::signal(tx), rx)
}

/// A WAL "fsync" that reports when it starts and returns only when the test releases it.
struct HeldSync {
    started: mpsc::Receiver<()>,
    release: mpsc::Sender<io::Result<()>>,
}

fn held_sync() -> (impl FnMut() -> io::Result<()> + Send + 'static, HeldSync) {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let sync = move || {
        started_tx.send(()).ok();
        // A dropped HeldSync releases everything, so a failing test cannot hang the drop.
        release_rx.recv().unwrap_or(Ok(()))
    };
    (sync, HeldSync { started, release })
}

fn put_raw(store: &RocksLogStore, index: u64, value: &[u8]) {
    store
        .db
        .put_cf(store.log_cf().unwrap(), index_key(index), value)
        .unwrap();
}

#[tokio::test]
async fn append_then_read_round_trip() {
    let (_dir, mut store) = open_store();
    let written = vec![blank(1, 1), normal(1, 2), normal(2, 3)];
    store.blocking_append(written.clone()).await.unwrap();

    assert_eq!(store.try_get_log_entries(1..4).await.unwrap(), written);
    assert_eq!(store.try_get_log_entries(..).await.unwrap(), written);
    assert_eq!(
        indexes(&store.try_get_log_entries(2..=3).await.unwrap()),
        [2, 3]
    );
    assert_eq!(
        indexes(&store.try_get_log_entries(2..3).await.unwrap()),
        [2]
    );
    assert_eq!(indexes(&store.try_get_log_entries(3..).await.unwrap()), [3]);
    assert!(store.try_get_log_entries(3..3).await.unwrap().is_empty());
    assert!(store.try_get_log_entries(4..100).await.unwrap().is_empty());
    assert!(store
        .try_get_log_entries((Bound::Excluded(u64::MAX), Bound::Unbounded))
        .await
        .unwrap()
        .is_empty());

    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(state.last_log_id, Some(log_id::<TypeConfig>(2, 1, 3)));
    assert_eq!(
        (store.first_index().unwrap(), store.last_index().unwrap()),
        (Some(1), Some(3))
    );

    // The reader openraft hands to replication sees the same log.
    let mut reader = store.get_log_reader().await;
    assert_eq!(reader.try_get_log_entries(1..4).await.unwrap(), written);
}

#[tokio::test]
async fn empty_log_has_no_state() {
    let (_dir, mut store) = open_store();
    let state = store.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
    assert_eq!(
        (store.first_index().unwrap(), store.last_index().unwrap()),
        (None, None)
    );
    assert_eq!(store.read_vote().await.unwrap(), None);
    assert_eq!(store.read_committed().await.unwrap(), None);
}

/// Appends are readable when `append` returns, but acknowledged only after an fsync that started
/// after they were written; acknowledgements follow append order, and appends queued during one
/// fsync share the next one (group commit).
#[tokio::test]
async fn callbacks_complete_in_order_and_only_after_the_wal_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (sync, held) = held_sync();
    let mut store = RocksLogStore::with_wal_sync(open_db(dir.path()).unwrap(), sync).unwrap();

    let (cb1, mut done1) = signalled();
    store.append([blank(1, 1)], cb1).await.unwrap();
    held.started.recv_timeout(WAIT).unwrap(); // fsync #1 (covering append 1) is in progress

    let (cb2, mut done2) = signalled();
    let (cb3, mut done3) = signalled();
    store.append([blank(1, 2)], cb2).await.unwrap();
    store.append([blank(1, 3), blank(1, 4)], cb3).await.unwrap();
    assert_eq!(
        indexes(&store.try_get_log_entries(..).await.unwrap()),
        [1, 2, 3, 4]
    );
    assert!(done1.try_recv().is_err() && done2.try_recv().is_err() && done3.try_recv().is_err());

    held.release.send(Ok(())).unwrap();
    tokio::time::timeout(WAIT, &mut done1)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Appends 2 and 3 were written during fsync #1, so it does not cover them: they wait for #2.
    held.started.recv_timeout(WAIT).unwrap();
    assert!(done2.try_recv().is_err() && done3.try_recv().is_err());

    held.release.send(Ok(())).unwrap();
    tokio::time::timeout(WAIT, &mut done2)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, &mut done3)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // One fsync served both.
    assert!(held.started.try_recv().is_err());
}

/// The exact completion order, under load: each waiter records itself when completed, and checks
/// that an fsync which began after its write has finished.
#[test]
fn flusher_completes_waiters_in_queue_order_after_an_fsync_covering_them() {
    const APPENDS: u64 = 2_000;
    let written = Arc::new(AtomicU64::new(0));
    let durable = Arc::new(AtomicU64::new(0));
    let sync = {
        let (written, durable) = (Arc::clone(&written), Arc::clone(&durable));
        move || {
            // Everything written before the fsync starts is durable once it returns.
            let covered = written.load(Ordering::SeqCst);
            std::thread::yield_now();
            durable.store(covered, Ordering::SeqCst);
            Ok(())
        }
    };
    let flusher = WalFlusher::spawn(sync).unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    for seq in 1..=APPENDS {
        let (done_tx, durable) = (done_tx.clone(), Arc::clone(&durable));
        let write = || {
            written.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        let waiter: FlushWaiter = Box::new(move |result| {
            done_tx
                .send((seq, result.is_ok(), durable.load(Ordering::SeqCst) >= seq))
                .unwrap();
        });
        flusher.write_then_enqueue(write, waiter).unwrap();
    }
    drop(flusher); // completes everything queued, then joins the thread
    drop(done_tx);
    let completions: Vec<_> = done_rx.iter().collect();
    assert_eq!(completions.len() as u64, APPENDS);
    for (position, (seq, ok, covered)) in completions.into_iter().enumerate() {
        assert_eq!(seq, position as u64 + 1, "completed out of order");
        assert!(
            ok && covered,
            "append {seq} acknowledged before an fsync covered it"
        );
    }
}

/// After a failed fsync the kernel may have dropped the unsynced pages, so a later "successful"
/// fsync proves nothing: the failed group and every later append must fail.
#[tokio::test]
async fn fsync_failure_fails_that_group_and_every_later_append() {
    let dir = tempfile::tempdir().unwrap();
    let (sync, held) = held_sync();
    let mut store = RocksLogStore::with_wal_sync(open_db(dir.path()).unwrap(), sync).unwrap();

    let (cb, done) = signalled();
    store.append([blank(1, 1)], cb).await.unwrap();
    held.release
        .send(Err(io::Error::other("disk on fire")))
        .unwrap();
    let err = tokio::time::timeout(WAIT, done)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");

    held.release.send(Ok(())).unwrap();
    let (cb, done) = signalled();
    store.append([blank(1, 2)], cb).await.unwrap();
    assert!(tokio::time::timeout(WAIT, done)
        .await
        .unwrap()
        .unwrap()
        .is_err());
}

#[tokio::test]
async fn fsync_thread_exits_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (alive_tx, alive_rx) = mpsc::channel::<()>();
    let sync = move || {
        let _owned_by_the_thread = &alive_tx;
        Ok(())
    };
    let mut store = RocksLogStore::with_wal_sync(open_db(dir.path()).unwrap(), sync).unwrap();
    let reader = store.get_log_reader().await;
    store.blocking_append([blank(1, 1)]).await.unwrap();

    drop(store);
    // A clone (the log reader) keeps the thread alive ...
    assert_eq!(alive_rx.try_recv(), Err(mpsc::TryRecvError::Empty));
    drop(reader);
    // ... and dropping the last one has stopped it (drop joins), releasing what it owned.
    assert_eq!(alive_rx.try_recv(), Err(mpsc::TryRecvError::Disconnected));
}

#[tokio::test]
async fn vote_committed_and_log_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new_committed(3, 2);
    let committed = Some(log_id::<TypeConfig>(2, 1, 4));
    {
        let mut store = RocksLogStore::new(open_db(dir.path()).unwrap()).unwrap();
        store
            .blocking_append((1..=5).map(|i| normal(2, i)))
            .await
            .unwrap();
        store.save_vote(&vote).await.unwrap();
        store.save_committed(committed).await.unwrap();
        store.purge(log_id::<TypeConfig>(2, 1, 1)).await.unwrap();
    } // drops the store, its fsync thread and the database, releasing RocksDB's lock

    let mut store = RocksLogStore::new(open_db(dir.path()).unwrap()).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), committed);
    assert_eq!(
        indexes(&store.try_get_log_entries(..).await.unwrap()),
        [2, 3, 4, 5]
    );
    assert_eq!(
        store.try_get_log_entries(5..6).await.unwrap(),
        [normal(2, 5)]
    );
    let state = store.get_log_state().await.unwrap();
    assert_eq!(
        state.last_purged_log_id,
        Some(log_id::<TypeConfig>(2, 1, 1))
    );
    assert_eq!(state.last_log_id, Some(log_id::<TypeConfig>(2, 1, 5)));

    store.save_committed(None).await.unwrap();
    assert_eq!(store.read_committed().await.unwrap(), None);
}

#[tokio::test]
async fn truncate_after_removes_the_tail() {
    let (_dir, mut store) = open_store();
    store
        .blocking_append((0..=10).map(|i| blank(1, i)))
        .await
        .unwrap();

    store
        .truncate_after(Some(log_id::<TypeConfig>(1, 1, 11)))
        .await
        .unwrap();
    assert_eq!(store.last_index().unwrap(), Some(10));

    store
        .truncate_after(Some(log_id::<TypeConfig>(1, 1, 5)))
        .await
        .unwrap();
    assert_eq!(
        indexes(&store.try_get_log_entries(0..100).await.unwrap()),
        [0, 1, 2, 3, 4, 5]
    );
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id::<TypeConfig>(1, 1, 5))
    );

    // A new leader's entries replace the truncated tail.
    store.blocking_append([blank(2, 6)]).await.unwrap();
    assert_eq!(store.try_get_log_entries(6..).await.unwrap(), [blank(2, 6)]);

    store.truncate_after(None).await.unwrap();
    assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
    let state = store.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
}

#[tokio::test]
async fn purge_removes_the_head_and_is_remembered() {
    let (_dir, mut store) = open_store();
    store
        .blocking_append((0..=10).map(|i| blank(1, i)))
        .await
        .unwrap();

    store.purge(log_id::<TypeConfig>(1, 1, 5)).await.unwrap();
    assert_eq!(
        indexes(&store.try_get_log_entries(0..100).await.unwrap()),
        [6, 7, 8, 9, 10]
    );
    assert_eq!(
        (store.first_index().unwrap(), store.last_index().unwrap()),
        (Some(6), Some(10))
    );
    let state = store.get_log_state().await.unwrap();
    assert_eq!(
        state.last_purged_log_id,
        Some(log_id::<TypeConfig>(1, 1, 5))
    );
    assert_eq!(state.last_log_id, Some(log_id::<TypeConfig>(1, 1, 10)));

    // Purging past the end (a snapshot installed ahead of the log) leaves the purged id as last.
    store.purge(log_id::<TypeConfig>(1, 1, 20)).await.unwrap();
    assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(
        state.last_purged_log_id,
        Some(log_id::<TypeConfig>(1, 1, 20))
    );
    assert_eq!(state.last_log_id, Some(log_id::<TypeConfig>(1, 1, 20)));
}

/// Every read, whether the recent tail in memory answers it or the database does, returns what the
/// database holds, through appends, a truncation with a new leader's entries, and a purge.
#[tokio::test]
async fn the_recent_tail_reads_as_the_database_does() {
    let (_dir, mut store) = open_store();
    async fn same(store: &mut RocksLogStore) {
        let ranges: [(u64, Option<u64>); 7] = [
            (0, None),
            (0, Some(3)),
            (2, Some(7)),
            (4, None),
            (6, Some(6)),
            (9, None),
            (30, None),
        ];
        for (start, end) in ranges {
            let stored = store.read_stored(start, end).unwrap();
            let read = match end {
                Some(end) => store.try_get_log_entries(start..end).await.unwrap(),
                None => store.try_get_log_entries(start..).await.unwrap(),
            };
            assert_eq!(read, stored, "range {start}..{end:?}");
        }
    }
    store
        .blocking_append((0..=10).map(|i| normal(1, i)))
        .await
        .unwrap();
    same(&mut store).await;
    store
        .truncate_after(Some(log_id::<TypeConfig>(1, 1, 5)))
        .await
        .unwrap();
    same(&mut store).await;
    store
        .blocking_append((6..=8).map(|i| normal(2, i)))
        .await
        .unwrap();
    same(&mut store).await;
    assert_eq!(
        store.try_get_log_entries(6..7).await.unwrap(),
        [normal(2, 6)]
    );
    store.purge(log_id::<TypeConfig>(1, 1, 3)).await.unwrap();
    same(&mut store).await;
    store.truncate_after(None).await.unwrap();
    same(&mut store).await;
    store.blocking_append([blank(3, 9)]).await.unwrap();
    same(&mut store).await;
}

#[test]
fn the_recent_tail_keeps_consecutive_entries_within_its_byte_budget() {
    let mut recent = Recent::default();
    let quarter = RECENT_BYTES / 4;
    for i in 1..=5 {
        recent.push(blank(1, i), quarter);
    }
    // The oldest entry went to stay within the budget.
    assert_eq!(recent.first_index(), Some(2));
    assert_eq!(recent.bytes, RECENT_BYTES);
    assert_eq!(recent.read(1, None), None, "entry 1 is no longer held");
    assert_eq!(indexes(&recent.read(3, Some(5)).unwrap()), [3, 4]);
    // An entry that does not follow the last one starts the tail afresh.
    recent.push(blank(2, 9), 10);
    assert_eq!(recent.first_index(), Some(9));
    assert_eq!(recent.bytes, 10);
    recent.truncate_from(9);
    assert_eq!(recent.first_index(), None);
    assert_eq!(recent.bytes, 0);
}

/// Pins the on-disk format: a value written by hand, as an older build would have written it.
#[tokio::test]
async fn reads_a_hand_made_version_1_value() {
    let (_dir, mut store) = open_store();
    let mut value = vec![1u8];
    value.extend_from_slice(
        br#"{"log_id":{"leader_id":{"term":2,"node_id":1},"index":3},"payload":"Blank"}"#,
    );
    put_raw(&store, 3, &value);
    assert_eq!(store.try_get_log_entries(..).await.unwrap(), [blank(2, 3)]);
    // And this build writes exactly that.
    assert_eq!(encode_value(&blank(2, 3), String::new).unwrap(), value);
}

#[tokio::test]
async fn corrupt_values_are_invalid_data_not_panics() {
    let cases: [(&str, &[u8]); 4] = [
        ("unknown value format version 2", b"\x02{}"),
        ("bad JSON", b"\x01{\"log_id\":"),
        ("empty value", b""),
        (
            "holds the entry of index 1",
            &encode_value(&blank(1, 1), String::new).unwrap(),
        ),
    ];
    for (expected, value) in cases {
        let (_dir, mut store) = open_store();
        store.blocking_append([blank(1, 1)]).await.unwrap();
        put_raw(&store, 2, value);
        let err = store.try_get_log_entries(..).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains(expected), "{err}");
        let err = store.get_log_state().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}

#[tokio::test]
async fn corrupt_keys_metadata_and_holes_are_invalid_data() {
    let (_dir, mut store) = open_store();
    store
        .db
        .put_cf(cf(&store.db, CF_RAFT_META).unwrap(), META_VOTE, b"\x07{}")
        .unwrap();
    let err = store.read_vote().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(
        err.to_string().contains("`vote`") && err.to_string().contains("version 7"),
        "{err}"
    );

    store
        .blocking_append([blank(1, 1), blank(1, 2), blank(1, 3)])
        .await
        .unwrap();
    store
        .db
        .delete_cf(store.log_cf().unwrap(), index_key(2))
        .unwrap();
    let err = store.try_get_log_entries(..).await.unwrap_err();
    assert!(err.to_string().contains("hole"), "{err}");

    store
        .db
        .put_cf(store.log_cf().unwrap(), b"short", b"\x01{}")
        .unwrap();
    let err = store.last_index().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}
