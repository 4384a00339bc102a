//! A TCP proxy in front of a real service (RabbitMQ, PostgreSQL, the S3 server) that a test can
//! cut and restore, to take the service away from the code under test without disturbing other
//! tests sharing the same server.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
};

use parking_lot::Mutex;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

/// What the proxy does with a new connection.
const FORWARD: u8 = 0;
const REFUSE: u8 = 1;
const STALL: u8 = 2;

/// A proxy on `127.0.0.1:<random port>` forwarding to one upstream address.
pub struct Proxy {
    /// Where the proxy listens; point the code under test here.
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    links: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let links = Arc::new(Mutex::new(JoinSet::new()));
        let upstream = upstream.to_string();
        let accept = {
            let (mode, links) = (mode.clone(), links.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    match mode.load(Ordering::SeqCst) {
                        REFUSE => drop(client), // the service is "down"
                        STALL => {
                            // Held open and never answered, until the proxy is cut, stalled again or dropped.
                            links.lock().spawn(async move {
                                let _client = client;
                                std::future::pending::<()>().await
                            });
                        }
                        _ => {
                            let upstream = upstream.clone();
                            links.lock().spawn(async move {
                                if let Ok(mut server) = TcpStream::connect(&upstream).await {
                                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server)
                                        .await;
                                }
                            });
                        }
                    }
                }
            })
        };
        Self {
            addr,
            mode,
            links,
            accept,
        }
    }

    /// An AMQP URL through the proxy (RabbitMQ's guest account, default vhost).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// A PostgreSQL URL of `database` through the proxy (user `postgres`, trust auth).
    pub fn postgres_url(&self, database: &str) -> String {
        format!("postgres://postgres@{}/{database}", self.addr)
    }

    /// An `http://` endpoint through the proxy (the S3 server).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The service goes away: open connections drop, new ones are refused.
    pub fn cut(&self) {
        self.go_away(REFUSE);
    }

    /// The service hangs: open connections drop, new ones are accepted and never answered
    /// (a broker or load balancer that takes the TCP connection and then says nothing).
    pub fn stall(&self) {
        self.go_away(STALL);
    }

    /// New connections get `mode`; open ones drop.
    fn go_away(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.links.lock().abort_all();
    }

    /// The service is back. Connections accepted while stalled stay silent; the code under test
    /// has to give up on them by itself.
    pub fn restore(&self) {
        self.mode.store(FORWARD, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.links.lock().abort_all();
    }
}
