//! The accept loop: TCP connections in, HTTP (and WebSocket upgrades) out through hyper, with
//! the limits a public server needs and `axum::serve` does not have.
//!
//! * A client must send its upgrade request within the handshake timeout, or its socket is
//!   closed: half-sent requests cannot pin file descriptors.
//! * One IP address may have only so many sockets in their handshake at once (a new one evicts
//!   its oldest: a stalled socket cannot lock the address's later clients out, and a real
//!   handshake takes a millisecond), and the runner only so many connections in all: one
//!   client cannot take every descriptor.
//! * Every socket counts against the connection cap from accept until it closes (an upgraded
//!   socket is counted by the live connections instead), and a socket answered without an
//!   upgrade (a 401, a 404) is closed (`Connection: close`), so it cannot linger on keep-alive.
//! * Accepted sockets write small frames at once (`TCP_NODELAY`): a reply followed by a push must
//!   not wait for the peer's delayed ACK.
//! * A peer that stops reading cannot hold its socket for ever: a write that the socket does
//!   not take for [`WRITE_STALL`] (its send buffer full all that time) ends the connection, an event stream's or an upgraded WebSocket's alike.
//!   hyper has no write timeout of its own, and TCP keeps a connection whose peer advertises a
//!   zero window open for as long as the peer answers its probes.
//! * At shutdown, an HTTP request being handled is finished and answered (up to a short grace);
//!   the accept loop returns only once they are, so the process does not exit under them.

use crate::Limits;
use crate::connections::Connections;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_io_timeout::TimeoutStream;
use tower_service::Service;

/// How long a write to a socket may wait for its peer to take data before the connection is
/// closed. Long enough for a phone's network to come back from a stall, short enough that a
/// reader that stopped for good gives its socket back.
pub const WRITE_STALL: Duration = Duration::from_secs(30);

/// A handshake this old has stalled: a real one takes a millisecond.
const STALLED_HANDSHAKE: Duration = Duration::from_millis(500);

/// How far past its handshake cap an address may go while none of its handshakes has stalled.
const BURST_OVER_CAP: usize = 4;

/// Who is let in.
#[derive(Clone)]
pub struct Admission {
    handshake_timeout: Duration,
    /// For the client port: the upgraded sockets, counted against `max_connections`.
    open: Option<Arc<Connections>>,
    max_connections: usize,
    max_handshakes_per_ip: usize,
    handshaking: Arc<Mutex<Handshaking>>,
    /// Sockets between accept and close (or hand-off to the WebSocket).
    in_flight: Arc<AtomicUsize>,
}

/// The sockets in their handshake, oldest first per address.
#[derive(Default)]
struct Handshaking {
    by_ip: HashMap<IpAddr, VecDeque<(u64, Instant, Arc<Notify>)>>,
    pending: usize,
    next: u64,
}

impl Admission {
    pub fn new(limits: &Limits, open: Arc<Connections>) -> Self {
        Admission {
            handshake_timeout: Duration::from_secs(limits.handshake_timeout_secs),
            open: Some(open),
            max_connections: limits.max_connections,
            max_handshakes_per_ip: limits.max_handshakes_per_ip,
            handshaking: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// The management API's: few sockets at a time (it serves the fanout and backends, one
    /// signed request per socket), none evicted.
    pub fn management(handshake_timeout_secs: u64) -> Self {
        const MANAGEMENT_SOCKETS: usize = 128;
        Admission {
            handshake_timeout: Duration::from_secs(handshake_timeout_secs),
            open: None,
            max_connections: MANAGEMENT_SOCKETS,
            max_handshakes_per_ip: MANAGEMENT_SOCKETS,
            handshaking: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// A place in the handshake, or `None` when the runner is full. An address at its cap of
    /// handshakes gets one by evicting its oldest, if that one has stalled; a burst of requests
    /// whose sockets are all young (a backend sending 64 POSTs at once) is let in, up to
    /// [`BURST_OVER_CAP`] times the cap, since each will be read in a moment.
    fn admit(&self, ip: IpAddr) -> Option<(Handshake, InFlight)> {
        let mut handshaking = self.handshaking.lock().expect("admission lock");
        let upgraded = self.open.as_ref().map_or(0, |open| open.len());
        let Handshaking { by_ip, pending, next } = &mut *handshaking;
        let from_ip = by_ip.entry(ip).or_default();
        if self.in_flight.load(Ordering::Relaxed) + upgraded >= self.max_connections {
            return None;
        }
        if from_ip.len() >= self.max_handshakes_per_ip {
            let stalled = from_ip.front().is_some_and(|(_, since, _)| since.elapsed() >= STALLED_HANDSHAKE);
            if stalled && let Some((_, _, evicted)) = from_ip.pop_front() {
                *pending -= 1;
                evicted.notify_one();
            } else if from_ip.len() >= self.max_handshakes_per_ip * BURST_OVER_CAP {
                return None;
            }
        }
        *next += 1;
        let evicted = Arc::new(Notify::new());
        from_ip.push_back((*next, Instant::now(), evicted.clone()));
        *pending += 1;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(self.in_flight.clone());
        Some((Handshake { ip, id: *next, evicted, handshaking: self.handshaking.clone() }, in_flight))
    }
}

/// A socket counted against the cap until the HTTP connection ends.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket's place among those in their handshake; released when its first request arrives.
struct Handshake {
    ip: IpAddr,
    id: u64,
    /// Notified when a newer handshake from the same address took this one's place.
    evicted: Arc<Notify>,
    handshaking: Arc<Mutex<Handshaking>>,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut handshaking = self.handshaking.lock().expect("admission lock");
        let Handshaking { by_ip, pending, .. } = &mut *handshaking;
        if let Some(from_ip) = by_ip.get_mut(&self.ip) {
            if let Some(at) = from_ip.iter().position(|(id, _, _)| *id == self.id) {
                from_ip.remove(at);
                *pending -= 1;
            }
            if from_ip.is_empty() {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `stopping`.
pub async fn run(listener: TcpListener, router: Router, admission: Admission, mut stopping: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = crate::stopped(&mut stopping) => break,
        };
        match accepted {
            Ok((stream, remote)) => match admission.admit(remote.ip()) {
                Some((handshake, in_flight)) => {
                    let timeout = admission.handshake_timeout;
                    let serving =
                        serve_one(stream, remote, router.clone(), (handshake, in_flight), timeout, stopping.clone());
                    tokio::spawn(serving);
                }
                None => tracing::debug!(%remote, "connection refused: the runner is at its connection cap"),
            },
            // Out of descriptors (EMFILE) or a connection reset while queued: wait a moment
            // rather than spin, then go on accepting.
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    finish_requests(&admission).await;
}

/// Waits (at most a little past [`HTTP_GRACE`]) until every HTTP request being handled at
/// shutdown is answered: the process must not exit under them.
async fn finish_requests(admission: &Admission) {
    let deadline = tokio::time::Instant::now() + HTTP_GRACE + Duration::from_millis(500);
    while admission.in_flight.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long shutdown lets an HTTP request being handled finish (a publish takes milliseconds;
/// a long poll is cut, and its client asks again).
const HTTP_GRACE: Duration = Duration::from_secs(2);

/// Serves one socket. It is counted (`in_flight`) until this returns: the connection ended, or
/// was handed to a WebSocket, which the live connections count from then on.
async fn serve_one(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    (handshake, _in_flight): (Handshake, InFlight),
    timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(WRITE_STALL));
    let evicted = handshake.evicted.clone();
    let handshake = Arc::new(Mutex::new(Some(handshake)));
    let in_handshake = handshake.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // The request is in: this socket is no longer in its handshake.
        drop(handshake.lock().expect("handshake lock").take());
        request.extensions_mut().insert(ConnectInfo(remote));
        let mut router = router.clone();
        async move {
            let mut response = router.call(request.map(axum::body::Body::new)).await?;
            // One request per socket unless it upgrades: nothing lingers on keep-alive.
            if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
                response
                    .headers_mut()
                    .insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(Box::pin(stream)), service)
        .with_upgrades();
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        // Shutdown: a request being handled is finished and answered (a WebSocket's socket is
        // not served here: it closes on the same signal with 1001); an idle or half-sent one is
        // closed.
        () = crate::stopped(&mut stopping) => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(HTTP_GRACE, connection.as_mut()).await {
                Ok(ended) => ended,
                Err(_) => return,
            }
        }
        // Evicted: a newer socket from the same address needed the place. Only a socket still
        // in its handshake is ever notified (the place is released with the first request).
        () = evicted.notified() => {
            if in_handshake.lock().expect("handshake lock").is_some() {
                tracing::info!(%remote, "handshake evicted by a newer one from the same address");
                return;
            }
            connection.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%remote, %error, "HTTP connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, Bytes};
    use axum::routing::get;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_loses_its_socket_once_writes_stall() {
        // GIVEN a server whose only route answers with an endless body,
        let endless = || async {
            Body::from_stream(futures_util::stream::repeat_with(|| {
                Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'x'; 64 * 1024]))
            }))
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admission = Admission::management(5);
        let in_flight = admission.in_flight.clone();
        let (_stop, stopping) = watch::channel(false);
        tokio::spawn(run(listener, Router::new().route("/", get(endless)), admission, stopping));
        // WHEN a client asks for it and then reads nothing,
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let started = tokio::time::Instant::now();
        while in_flight.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // THEN the server gives the socket up once its writes have stalled for WRITE_STALL
        // (on the paused clock), though the client never closed it.
        while in_flight.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(started.elapsed() < WRITE_STALL * 4, "the stalled connection is still served");
        }
        assert!(started.elapsed() >= WRITE_STALL, "ended before its writes stalled long enough");
        drop(client);
    }
}
