"""The conversation agent: the streamed tool loop, its prompt and entity catalog, memory, tools and
their schemas, API clients per stage, and images.
"""
