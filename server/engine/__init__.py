"""Generation engines: one loop per loaded model batches every live stream; transports only submit and read."""
