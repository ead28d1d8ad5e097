"""videor4.contracts — what curation, annotation and training agree on, in one place.

Each module is one contract: the tool protocol (call format, parsing, answer tags), the clip/crop executor and
its factory, the model's view (frames, pixel budgets), the chat rendering, the chat <-> shard codec, the shard,
evidence and reject schemas, the official answer normaliser and metrics, the dataset layout, video decoding and
the small I/O primitives (atomic writes, user errors) every layer uses. This package imports none of
``videor4.curation``, ``videor4.annotation``, ``videor4.training`` or ``videor4.pipelines``; they all import it,
so dependencies point one way (pipelines -> curation / annotation / training -> contracts).
"""
