//! The public payment event contract: what payorch appends and publishes.
