"""Console scripts: livevlm_offline, livevlm_replay, livevlm_ask, livevlm_demo."""
