"""Team knowledge: folders of the team's own documents, cut into passages, indexed for keyword
and vector search in the database the product already runs, and searched by the
`search_knowledge` tool, which hands the answer its sources.

- `documents`: files (Markdown, text, HTML, PDF) → sections under their headings
- `chunks`: sections → bounded passages, each content-hashed
- `embeddings`: passages → vectors from the model server's `/v1/embeddings`, accounted
- `catalog`: `knowledge.yaml`, the collections an installation declares
- `sync`: a folder → the store, embedding only what changed
- `service`: search for a conversation (only what its place may see), and the tool
"""
