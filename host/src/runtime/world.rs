//! The worlds a plugin can target (`wit/`): what it exports decides how a stage runs it.

use std::fmt;

/// The world a plugin targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Processor,
    Collector,
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Processor => "processor",
            World::Collector => "collector",
        })
    }
}
