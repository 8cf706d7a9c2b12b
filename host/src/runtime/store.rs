//! The per-instance data every wasmtime `Store` carries, and the host side of the
//! `log`, `metrics` and `state` imports.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::processor::sluice::plugin::{log, metrics, state};
use super::limits::MemoryLimiter;
use super::stderr::StderrTail;
use crate::state::Transaction;

pub struct StoreData {
    pub(crate) stage: Arc<str>,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) stderr: StderrTail,
    pub(crate) state: Transaction,
    /// The first state-store failure of the current call; it fails the call.
    pub(crate) state_error: Option<String>,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl log::Host for StoreData {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        let stage = &*self.stage;
        let fields = FieldList(&fields);
        match level {
            log::Level::Trace => tracing::trace!(stage, %fields, "{message}"),
            log::Level::Debug => tracing::debug!(stage, %fields, "{message}"),
            log::Level::Info => tracing::info!(stage, %fields, "{message}"),
            log::Level::Warn => tracing::warn!(stage, %fields, "{message}"),
            log::Level::Error => tracing::error!(stage, %fields, "{message}"),
        }
    }
}

/// Renders plugin log fields as `k=v k=v`.
struct FieldList<'a>(&'a [(String, String)]);

impl std::fmt::Display for FieldList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, (key, value)) in self.0.iter().enumerate() {
            write!(f, "{}{key}={value}", if n > 0 { " " } else { "" })?;
        }
        Ok(())
    }
}

/// Plugin metric names become `sluice_plugin_<name>`, restricted to Prometheus' alphabet.
fn metric_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("sluice_plugin_{clean}")
}

impl metrics::Host for StoreData {
    fn counter_add(&mut self, name: String, value: u64) {
        ::metrics::counter!(metric_name(&name), "stage" => self.stage.to_string()).increment(value);
    }

    fn gauge_set(&mut self, name: String, value: f64) {
        ::metrics::gauge!(metric_name(&name), "stage" => self.stage.to_string()).set(value);
    }
}

impl StoreData {
    fn note_state_error(&mut self, error: crate::state::StateError) {
        self.state_error.get_or_insert_with(|| error.to_string());
    }
}

impl state::Host for StoreData {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key).unwrap_or_else(|error| {
            self.note_state_error(error);
            None
        })
    }

    fn put(&mut self, key: String, value: Vec<u8>) {
        self.state.put(key, value);
    }

    fn delete(&mut self, key: String) {
        self.state.delete(key);
    }

    fn scan_prefix(&mut self, prefix: String, limit: u32) -> Vec<(String, Vec<u8>)> {
        self.state
            .scan_prefix(&prefix, limit as usize)
            .unwrap_or_else(|error| {
                self.note_state_error(error);
                Vec::new()
            })
    }
}

impl super::bindings::processor::sluice::plugin::types::Host for StoreData {}
