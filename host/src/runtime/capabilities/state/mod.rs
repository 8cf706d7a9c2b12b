//! The `state` capability: per-stage durable key-value state. A call's writes are held
//! in a [`Transaction`] and committed when the call succeeds.
//!
//! Every argument is checked against the stage's quotas before the host keeps it: a
//! key past `state_key_bytes`, a value past `state_value_bytes`, or a write that would
//! leave more than `state_write_bytes_per_call` pending traps the call. A scan stops
//! past the instance's memory cap (the guest could not take the answer anyway). The
//! stage's total (`state_total_bytes`) is enforced at commit, in the store.

pub mod quotas;

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::runtime::bindings::state;
use crate::runtime::error::{CallFailure, LimitExceeded};
use quotas::StateQuotas;
use super::StageContext;
use crate::state::{StateError, StateStore, Transaction};

/// One instance's side of the `state` capability.
pub struct StateCtx {
    txn: Transaction,
    key_bytes: u32,
    value_bytes: u32,
    write_bytes_per_call: u64,
    total_bytes: u64,
    scan_bytes: u64,
}

impl StateCtx {
    /// `scan_bytes`: where a scan stops (the instance's memory cap).
    pub fn new(store: Arc<StateStore>, stage: Arc<str>, quotas: &StateQuotas, scan_bytes: u64) -> Self {
        StateCtx {
            txn: Transaction::new(store, stage),
            key_bytes: quotas.key_bytes,
            value_bytes: quotas.value_bytes,
            write_bytes_per_call: quotas.write_bytes_per_call,
            total_bytes: quotas.total_bytes,
            scan_bytes,
        }
    }

    /// Make the call's writes durable, within the stage's total.
    pub fn commit(&mut self) -> Result<(), CallFailure> {
        self.txn
            .commit(self.total_bytes)
            .map_err(|error| match error {
                StateError::Full { stored, limit } => CallFailure::Limit(LimitExceeded::new(
                    "state_total_bytes",
                    format!("the stage's state after this call, {stored} bytes,"),
                    limit,
                )),
                other => CallFailure::State(other.to_string()),
            })
    }

    /// Forget the call's writes.
    pub fn rollback(&mut self) {
        self.txn.rollback();
    }

    /// Take the call's writes out, to be committed once what the call emitted is
    /// taken downstream (a tick's).
    pub fn defer(&mut self) -> DeferredWrites {
        DeferredWrites {
            txn: self.txn.split_off(),
            total_bytes: self.total_bytes,
        }
    }

    fn check_key(&self, key: &str) -> wasmtime::Result<()> {
        if key.len() > self.key_bytes as usize {
            return Err(limit(
                "state_key_bytes",
                format!("state key of {} bytes", key.len()),
                self.key_bytes.into(),
            ));
        }
        Ok(())
    }

    /// Write `value` under `key` (`None`: delete), or refuse a write that would leave
    /// more than the per-call budget pending.
    fn write(&mut self, key: String, value: Option<Vec<u8>>) -> wasmtime::Result<()> {
        self.txn
            .write_within(key, value, self.write_bytes_per_call)
            .map_err(|pending| {
                limit(
                    "state_write_bytes_per_call",
                    format!("{pending} bytes of state writes pending in one call"),
                    self.write_bytes_per_call,
                )
            })
    }
}

/// State writes of a finished call, waiting to be committed.
pub struct DeferredWrites {
    txn: Transaction,
    total_bytes: u64,
}

impl DeferredWrites {
    /// Whether the call wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.txn.is_empty()
    }

    /// Make the writes durable, within the stage's total.
    pub fn commit(mut self) -> Result<(), StateError> {
        self.txn.commit(self.total_bytes)
    }
}

fn limit(name: &'static str, what: String, allowed: u64) -> wasmtime::Error {
    wasmtime::Error::new(LimitExceeded::new(name, what, allowed))
}

/// A store failure traps the call; the runtime reports it as [`CallFailure::State`].
fn store_error(error: StateError) -> wasmtime::Error {
    wasmtime::Error::new(error)
}

impl super::HostState for StateCtx {
    type Shared = ();
    fn shared(_: &StageContext<'_>) {}
    fn new(spec: &StageContext<'_>, (): &()) -> Self {
        StateCtx::new(
            spec.state.clone(),
            spec.stage.clone(),
            &spec.limits.state,
            spec.limits.memory_bytes,
        )
    }
}

/// Gives the `state` host functions their state, as `WasiView` does for WASI.
pub trait StateView {
    fn state(&mut self) -> &mut StateCtx;
}

struct HasState;

impl HasData for HasState {
    type Data<'a> = &'a mut StateCtx;
}

pub fn add_to_linker<T: StateView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    state::add_to_linker::<T, HasState>(linker, T::state)
}

impl state::Host for StateCtx {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.check_key(&key)?;
        self.txn.get(&key).map_err(store_error)
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        self.check_key(&key)?;
        if value.len() > self.value_bytes as usize {
            return Err(limit(
                "state_value_bytes",
                format!("state value of {} bytes", value.len()),
                self.value_bytes.into(),
            ));
        }
        self.write(key, Some(value))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.check_key(&key)?;
        self.write(key, None)
    }

    fn scan_prefix(
        &mut self,
        prefix: String,
        limit: u32,
    ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        self.check_key(&prefix)?;
        self.txn
            .scan_prefix(&prefix, limit as usize, self.scan_bytes)
            .map_err(|error| match error {
                StateError::ScanTooLarge { limit: allowed } => self::limit(
                    "memory_bytes",
                    format!("a state scan of prefix `{prefix}` over {allowed} bytes"),
                    allowed,
                ),
                other => store_error(other),
            })
    }
}
