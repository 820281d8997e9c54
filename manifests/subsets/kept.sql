-- Every sample that survived all filters and sits in a training shard.
SELECT * FROM samples WHERE status = 'kept'
