//! recur-engine: the GPU engine (in progress).
