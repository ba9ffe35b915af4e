-- wrk script: one-row Open Inference Protocol v2 request asking for label and probabilities.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[5.1,3.5,1.4,0.2]}],"outputs":[{"name":"predict"},{"name":"predict_proba"}]}'
