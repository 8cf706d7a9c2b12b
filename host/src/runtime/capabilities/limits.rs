//! The `limits` capability (since contract 0.1.1): a read-only view of the stage's
//! quotas, so that a plugin can size its work to fit rather than find a limit by
//! failing.

use wasmtime::component::{HasData, Linker};

use crate::runtime::bindings::limits::{self, StageLimits};
use crate::runtime::limits::Limits;
use super::StageContext;

/// One instance's side of the `limits` capability: the stage's quotas, as the WIT
/// record, built once per instance.
pub struct LimitsCtx {
    limits: StageLimits,
}

impl LimitsCtx {
    pub fn new(limits: &Limits) -> Self {
        LimitsCtx {
            limits: StageLimits {
                memory_bytes: limits.memory_bytes,
                timeout_ms: limits.timeout.as_millis().try_into().unwrap_or(u64::MAX),
                state_key_bytes: limits.state.key_bytes,
                state_value_bytes: limits.state.value_bytes,
                state_write_bytes_per_call: limits.state.write_bytes_per_call,
                state_total_bytes: limits.state.total_bytes,
                log_message_bytes: limits.log.message_bytes,
                log_lines_per_second: limits.log.lines_per_second,
                metric_series: limits.metrics.series,
                outputs_per_call: limits.outputs_per_call,
                output_bytes_per_call: limits.output_bytes_per_call,
            },
        }
    }
}

impl super::HostState for LimitsCtx {
    type Shared = ();
    fn shared(_: &StageContext<'_>) {}
    fn new(spec: &StageContext<'_>, (): &()) -> Self {
        LimitsCtx::new(&spec.limits)
    }
}

/// Gives the `limits` host function its state, as `WasiView` does for WASI.
pub trait LimitsView {
    fn limits(&mut self) -> &mut LimitsCtx;
}

struct HasLimits;

impl HasData for HasLimits {
    type Data<'a> = &'a mut LimitsCtx;
}

pub fn add_to_linker<T: LimitsView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    limits::add_to_linker::<T, HasLimits>(linker, T::limits)
}

impl limits::Host for LimitsCtx {
    fn get(&mut self) -> wasmtime::Result<StageLimits> {
        Ok(self.limits)
    }
}
