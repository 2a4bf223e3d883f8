//! Group commit for a leader worker's commands: many outcomes share one log entry.
//!
//! ```text
//!  task ─► write(command) ─► channel ─► committer: take what is queued (at most MAX_COMMANDS)
//!                                        ─► one command: propose it as is
//!                                        ─► several:    propose Command::Batch (one entry, one fsync)
//!        ◄──────────── its own answer ◄── Applied::Batch { results } split per command
//! ```
//!
//! The committer proposes as soon as a commit slot is free, so a lone command waits for nothing; only
//! when every slot is busy do commands queue up, and the next entry carries all of them. Each command
//! is applied, audited and answered as if it were its own entry, so callers see no difference.

use std::sync::Arc;

use certplane_core::command::{Applied, Rejection};
use certplane_core::{Command, Principal, Proposal, Timestamp};
use certplane_raft::node::RaftNode;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Commands per entry. Bounded so an entry stays small next to the transport's message limit even
/// when a lagging follower receives `max_payload_entries` of them in one AppendEntries.
pub const MAX_COMMANDS: usize = 64;
/// Entries being committed at once; further commands queue and go together in the next one.
const IN_FLIGHT: usize = 4;
/// Commands waiting for a slot before `write` itself waits.
const QUEUE: usize = 8192;

/// A command's answer: what `apply` said, or why it was not committed (no leader, shutting down).
pub type Answer = Result<Result<Applied, Rejection>, String>;

struct Item {
    command: Command,
    reply: oneshot::Sender<Answer>,
}

/// One worker's committer. Cheap to clone; the committer ends when the last clone is dropped.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Item>,
}

impl Batcher {
    /// Start the committer for `actor`'s commands; `clock` stamps each entry's proposal time.
    pub fn start(
        node: Arc<RaftNode>,
        actor: Principal,
        clock: impl Fn() -> Timestamp + Send + Sync + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(commit_loop(node, actor, Arc::new(clock), rx));
        Batcher { tx }
    }

    /// Commit `command` (alone or with others queued at the same time) and return its own answer.
    pub async fn write(&self, command: Command) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Item { command, reply })
            .await
            .map_err(|_| "the committer has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the committer dropped the command".to_string())?
    }
}

async fn commit_loop(
    node: Arc<RaftNode>,
    actor: Principal,
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    mut rx: mpsc::Receiver<Item>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut items = vec![first];
        while items.len() < MAX_COMMANDS {
            match rx.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        let node = node.clone();
        let actor = actor.clone();
        let at = clock();
        tokio::spawn(async move {
            commit(&node, actor, at, items).await;
            drop(slot);
        });
    }
}

async fn commit(node: &RaftNode, actor: Principal, at: Timestamp, mut items: Vec<Item>) {
    metrics::histogram!("certplane_worker_batch_commands").record(items.len() as f64);
    if items.len() == 1 {
        if let Some(item) = items.pop() {
            let answer = node
                .write(Proposal::new(at, actor, item.command))
                .await
                .map(|outcome| outcome.result)
                .map_err(|e| e.to_string());
            let _ = item.reply.send(answer);
        }
        return;
    }
    let (commands, replies): (Vec<_>, Vec<_>) =
        items.into_iter().map(|i| (i.command, i.reply)).unzip();
    let count = commands.len();
    let written = node
        .write(Proposal::new(at, actor, Command::Batch { commands }))
        .await;
    match written {
        Ok(outcome) => match outcome.result {
            Ok(Applied::Batch { results }) if results.len() == count => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Ok(other) => {
                let why = format!("unexpected answer to a batch: {other:?}");
                for reply in replies {
                    let _ = reply.send(Err(why.clone()));
                }
            }
            Err(rejection) => {
                for reply in replies {
                    let _ = reply.send(Ok(Err(rejection.clone())));
                }
            }
        },
        Err(e) => {
            let why = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(why.clone()));
            }
        }
    }
}
