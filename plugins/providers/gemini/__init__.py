"""The `gemini` adapter: OpenAI chat and embeddings requests to Google's Gemini API (generateContent) and back."""
