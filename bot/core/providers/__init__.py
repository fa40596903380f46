"""Image providers: Gemini's native API and the OpenAI-compatible shapes used by relays."""

from .base import Provider, ProviderConfig
from .gemini import GeminiProvider
from .openai import OpenAIChatProvider, OpenAIImagesProvider

__all__ = ["GeminiProvider", "OpenAIChatProvider", "OpenAIImagesProvider", "Provider", "ProviderConfig"]
