//! The accept loop both TLS listeners use: the network allow-list, a slot among all
//! connections and one among the address's, all taken before any work for the connection
//! (its TLS handshake included) starts. A connection that gets no slot is closed at once.
//! Admitted connections send without Nagle's delay (TCP_NODELAY).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::limits::{AddressSlot, Cidr, PerAddress};

/// The slots a served connection holds for its whole life.
pub type Slots = (OwnedSemaphorePermit, AddressSlot);

/// Accepts on `listener` forever; each admitted connection goes to `serve` on a task of
/// its own, with its slots.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    allowed_networks: Arc<Vec<Cidr>>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    per_address: PerAddress,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Slots) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !allowed_networks.is_empty() && !allowed_networks.iter().any(|n| n.contains(peer.ip())) {
            tracing::warn!("connection from {peer} closed: not in server.allowed_networks");
            continue;
        }
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!("connection from {peer} closed: {max_connections} connections open");
            continue;
        };
        let Some(address_slot) = per_address.try_enter(peer.ip()) else {
            tracing::warn!(
                "connection from {peer} closed: that address holds {} connections",
                per_address.max()
            );
            continue;
        };
        // Answers and handshake flights must not wait for Nagle's algorithm against the
        // client's delayed ACK (about 40 ms a round on Linux).
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp, peer, (permit, address_slot)));
    }
}
