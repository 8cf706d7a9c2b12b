//! Workflows: the host's jobs run on their schedules, with what a job kind cannot do
//! from its own layer (running a whole pipeline).

pub mod pipelines;
