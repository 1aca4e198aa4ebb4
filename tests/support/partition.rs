//! A network partition between one client and the API server, on loopback: a
//! TCP proxy the client connects through, which can be cut and healed. Cut,
//! no byte moves either way and connections stay open (what a client sees
//! when the network drops its packets); healed, whatever was held is
//! delivered, as TCP would once the network came back. It runs on a thread
//! and a runtime of its own, so nothing the test blocks on holds it up.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Partition {
    /// Where the client connects (127.0.0.1).
    pub addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
}

impl Partition {
    /// Starts forwarding to `upstream`, healed.
    pub fn start(upstream: SocketAddr) -> Partition {
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let state = cut.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("proxy runtime");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((client, _)) = listener.accept().await else { continue };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else { return };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::spawn(pipe(client_read, server_write, state.subscribe()));
                        tokio::spawn(pipe(server_read, client_write, state.subscribe()));
                    });
                }
            });
        });
        Partition { addr: addr_rx.recv().expect("proxy address"), cut }
    }

    /// The client's traffic stops, both ways.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// The client's traffic flows again, held bytes first.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

/// Copies `from` to `to`, moving nothing while cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if cut.wait_for(|c| !c).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Read just as the cut came: held until it heals.
        if cut.wait_for(|c| !c).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
