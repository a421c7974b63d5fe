//! recur-data: corpus, vocabulary and samplers (in progress).
