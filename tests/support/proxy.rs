//! A TCP relay per directed link between two in-process nodes, so tests can cut the network.
//!
//! Node A reaches node B through `LinkProxy(A→B)`. Cutting a link closes its open connections and
//! refuses new ones until it is healed: from A's point of view, B has vanished from the network, as in
//! a real partition.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct LinkProxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    accept_task: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl LinkProxy {
    pub async fn start(target: SocketAddr) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept_task = {
            let cut = cut.clone();
            let conns = conns.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let handle = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ = inbound.set_nodelay(true);
                            let _ = outbound.set_nodelay(true);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    let mut list = conns.lock().expect("conns");
                    list.retain(|h| !h.is_finished());
                    list.push(handle);
                }
            })
        };
        LinkProxy {
            addr,
            cut,
            generation,
            accept_task,
            conns,
        }
    }

    /// Drop every open connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for h in self.conns.lock().expect("conns").drain(..) {
            h.abort();
        }
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        for h in self
            .conns
            .lock()
            .map(|mut l| l.drain(..).collect::<Vec<_>>())
            .unwrap_or_default()
        {
            h.abort();
        }
    }
}
