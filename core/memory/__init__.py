"""Memory: items of text with their embeddings, per tenant and namespace, and hybrid search.

`tables` holds the rows, `store` the keyword-only functions on a session, `search` the
ranking (reciprocal rank fusion) and the search and write flows over an embedder and an index.
"""
