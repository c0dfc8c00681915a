"""Text discriminator: real text against text sampled from the default character LSTM, on 256-character windows."""
