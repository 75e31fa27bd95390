"""Recommendation: SASRec and DIN trained on a user's interaction log, with the history items behind
every recommendation (:mod:`attend.apps.recommend.pipeline`), an HTML view
(:mod:`attend.apps.recommend.render`) and the ``attend recommend`` verbs (:mod:`attend.apps.recommend.cli`)."""
