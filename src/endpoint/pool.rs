//! The pool both dialects use: a bb8 pool built without connecting (a side that is down is
//! found when a connection is first asked for), which remembers the last connection error
//! (bb8 itself only reports "timed out" to the caller) and turns a failure to get a connection
//! into [`EndpointError::Unreachable`]. What differs per dialect is the connection manager
//! ([`Driver`]) and how a driver error met *on* a connection is classified (each dialect's
//! `pool.rs`).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Side;
use crate::endpoint::{EndpointError, PoolState};

/// A dialect's bb8 connection manager.
pub trait Driver: bb8::ManageConnection {
    /// An error's message, without credentials.
    fn describe(e: &Self::Error) -> String;
}

/// Keeps the last connection error, described.
struct LastError<M: Driver> {
    slot: Arc<Mutex<Option<String>>>,
    _driver: std::marker::PhantomData<fn() -> M>,
}

impl<M: Driver> Clone for LastError<M> {
    fn clone(&self) -> Self {
        LastError {
            slot: self.slot.clone(),
            _driver: std::marker::PhantomData,
        }
    }
}

impl<M: Driver> fmt::Debug for LastError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LastError").field(&self.slot).finish()
    }
}

impl<M: Driver> bb8::ErrorSink<M::Error> for LastError<M> {
    fn sink(&self, e: M::Error) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(M::describe(&e));
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<M::Error>> {
        Box::new(self.clone())
    }
}

/// A pool for one side, created without connecting.
pub struct Pool<M: Driver> {
    pool: bb8::Pool<M>,
    max: u32,
    last_error: LastError<M>,
    side: Side,
    /// Where it connects (host, port, database), never the password.
    target: String,
}

impl<M: Driver> Pool<M> {
    /// Builds the pool of at most `size` connections (at least one); no connection is made
    /// yet. `connection_timeout`: how long [`get`](Self::get) waits for a connection.
    pub fn build(
        manager: M,
        size: u32,
        side: Side,
        target: String,
        connection_timeout: Duration,
    ) -> Pool<M> {
        let last_error = LastError {
            slot: Arc::default(),
            _driver: std::marker::PhantomData,
        };
        let pool = bb8::Pool::builder()
            .max_size(size.max(1))
            .connection_timeout(connection_timeout)
            .test_on_check_out(false)
            .error_sink(Box::new(last_error.clone()))
            .build_unchecked(manager);
        Pool {
            pool,
            max: size.max(1),
            last_error,
            side,
            target,
        }
    }

    /// A connection, or why there is none.
    pub async fn get(&self) -> Result<bb8::PooledConnection<'_, M>, EndpointError> {
        self.pool.get().await.map_err(|e| {
            let message = match e {
                bb8::RunError::User(e) => M::describe(&e),
                bb8::RunError::TimedOut => self
                    .last_error
                    .slot
                    .lock()
                    .ok()
                    .and_then(|s| s.clone())
                    .unwrap_or_else(|| "timed out waiting for a connection".into()),
            };
            EndpointError::Unreachable {
                side: self.side,
                target: self.target.clone(),
                message,
            }
        })
    }

    /// Open and idle connections.
    pub fn state(&self) -> PoolState {
        let st = self.pool.state();
        PoolState {
            connections: st.connections,
            idle: st.idle_connections,
            max: self.max,
        }
    }

    /// The side this pool serves.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Where this pool connects, without credentials.
    pub fn target(&self) -> &str {
        &self.target
    }
}
