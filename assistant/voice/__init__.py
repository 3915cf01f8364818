"""Speech through the APIs and engines: transcription (stt), synthesis (tts), and the sentence
splitter that lets speech start early.
"""
