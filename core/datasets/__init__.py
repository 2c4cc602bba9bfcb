"""The dataset tools behind :mod:`core.dataset_manager`, one job per module.

``naming`` safe names and ``N_name`` folders; ``files`` atomic writes and safe moves;
``importers`` zip and folder imports; ``remote`` URL and Hugging Face imports; ``booru``
gallery-dl and tag cleaning; ``validation`` the report; ``hashing`` exact and perceptual hashes;
``fixes`` moving rejects and converting images; ``statistics`` counts, buckets and steps;
``tags`` tag text rules; ``captions`` bulk edits with preview; ``caption_history`` snapshots and
undo; ``cli`` the command line.
"""
